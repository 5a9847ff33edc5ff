"""Context from the other cardiac phase: the end-systolic image of the same subject beside the end-diastolic
one as extra input channels, and the end-diastolic beside the end-systolic.

Why: at end-systole the valve plane has descended, and the annotators follow it: in 58 of the 80 ACDC patients
the reference RV starts 1-3 slices further from the base at ES than at ED (``benchmarks/reference_extents.py``).
A network that sees one phase cannot tell a basal slice that still holds ventricle from one that now shows the
atrium; beside the same slice at the other phase it sees how the slice changed.

Channel order: the case's C image channels, then its partner's C (the same preprocessing, voxel-aligned), so
2C channels; through-plane context (:mod:`autocmr.preprocessing.context`) applies on top, channel-major. A
volume without a partner (a lone 3D file, or a partner that does not align voxel for voxel) is paired with
itself; training does that on purpose for a share of its samples (``--other-phase-dropout``) so that one
network serves both. The network's channel count is :meth:`autocmr.documents.plans.Configuration.input_channels`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch

from autocmr.evaluation.clinical import ED, ES

logger = logging.getLogger(__name__)
Array = TypeVar("Array", np.ndarray, torch.Tensor)

# Properties of a preprocessed case that must agree for two cases to be aligned voxel for voxel: the same
# image grid before cropping, the same crop and the same resampled shape and spacing.
ALIGNMENT_KEYS = ("shape_before_crop", "bbox", "shape_after_resampling", "spacing")


def with_partner(data: Array, partner: Array | None = None) -> Array:
    """``data`` (C, ...) with its partner's channels appended: (2C, ...). No partner: the image itself."""
    if partner is None:
        partner = data
    if tuple(partner.shape) != tuple(data.shape):
        raise ValueError(f"the other phase has shape {tuple(partner.shape)}, the image {tuple(data.shape)}: "
                         "they must be voxel-aligned")
    if isinstance(data, torch.Tensor):
        return torch.cat([data, partner], dim=0)
    return np.concatenate([data, partner], axis=0)


def aligned(properties: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two preprocessed cases lie on the same voxel grid (:data:`ALIGNMENT_KEYS` agree)."""
    return all(properties.get(k) is not None and properties.get(k) == other.get(k) for k in ALIGNMENT_KEYS)


def pair_aligned(data: Array, properties: Mapping[str, Any], partner: Array | None,
                 partner_properties: Mapping[str, Any] | None) -> tuple[Array, str | None]:
    """:func:`with_partner` of two preprocessed volumes when they are :func:`aligned`; a partner that is not is
    replaced by the image itself, and the second value says why (None when nothing was replaced)."""
    if partner is None or partner_properties is None or aligned(properties, partner_properties):
        return with_partner(data, partner), None
    differing = ", ".join(f"{k} {properties.get(k)} vs {partner_properties.get(k)}" for k in ALIGNMENT_KEYS
                          if properties.get(k) != partner_properties.get(k))
    return with_partner(data), f"the other phase does not lie on its voxel grid ({differing})"


def phase_partners(phases: Mapping[str, tuple[str, str]],
                   properties: Callable[[str], Mapping[str, Any]]) -> dict[str, str]:
    """Each case's other phase: ``phases`` maps a case id to its (subject, phase); a subject with exactly one
    ED and one ES case that are :func:`aligned` pairs them both ways. Other cases are left out (they are
    paired with themselves); a pair that does not align is logged."""
    by_subject: dict[str, dict[str, list[str]]] = {}
    for case_id, (subject, phase) in phases.items():
        if phase in (ED, ES):
            by_subject.setdefault(subject, {}).setdefault(phase, []).append(case_id)
    partners: dict[str, str] = {}
    misaligned = []
    for subject, cases in sorted(by_subject.items()):
        if len(cases.get(ED, [])) != 1 or len(cases.get(ES, [])) != 1:
            continue
        ed, es = cases[ED][0], cases[ES][0]
        if aligned(properties(ed), properties(es)):
            partners[ed], partners[es] = es, ed
        else:
            misaligned.append(subject)
    if misaligned:
        logger.warning("other phase: the ED and ES volumes of %d subject(s) do not lie on the same voxel grid "
                       "(e.g. %s); each is paired with itself", len(misaligned), misaligned[0])
    return partners
