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
import pandas as pd
import torch

from autocmr.evaluation.clinical import ED, ES, subject_and_phase

logger = logging.getLogger(__name__)
Array = TypeVar("Array", np.ndarray, torch.Tensor)

# Properties of a preprocessed case that must agree for two cases to be aligned voxel for voxel: the same
# image grid before cropping, the same crop and the same resampled shape and spacing; and, where both record
# the input's header (``geometry``: training cases, and the batch path's), the same place in the scanner.
ALIGNMENT_KEYS = ("shape_before_crop", "bbox", "shape_after_resampling", "spacing")
# Two headers of one acquisition written to separate files agree to rounding; a stack at another position
# (another slice range, a shifted field of view) differs by a sizeable part of a voxel.
ORIGIN_TOLERANCE_VOXELS = 0.1
DIRECTION_TOLERANCE = 1e-3


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
    """Whether two preprocessed cases lie on the same voxel grid (:data:`ALIGNMENT_KEYS` agree, spacings to
    rounding, and the headers' origin and direction where both have a ``geometry``)."""
    return not _differences(properties, other)


def _differences(properties: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    out = []
    for key in ALIGNMENT_KEYS:
        a, b = properties.get(key), other.get(key)
        same = (a is not None and b is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-5)
                if key == "spacing" else a is not None and a == b)
        if not same:
            out.append(f"{key} {a} vs {b}")
    mine, theirs = properties.get("geometry"), other.get("geometry")
    if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
        spacing = min(mine.get("spacing") or [1.0])
        for key, atol in (("origin", ORIGIN_TOLERANCE_VOXELS * spacing), ("direction", DIRECTION_TOLERANCE)):
            a, b = mine.get(key), theirs.get(key)
            if a is not None and b is not None and (np.shape(a) != np.shape(b) or not np.allclose(a, b, atol=atol)):
                out.append(f"{key} {list(a)} vs {list(b)}")
    return out


def pair_aligned(data: Array, properties: Mapping[str, Any], partner: Array | None,
                 partner_properties: Mapping[str, Any] | None) -> tuple[Array, str | None]:
    """:func:`with_partner` of two preprocessed volumes when they are :func:`aligned`; a partner that is not is
    replaced by the image itself, and the second value says why (None when nothing was replaced)."""
    if partner is None or partner_properties is None or aligned(properties, partner_properties):
        return with_partner(data, partner), None
    differing = ", ".join(_differences(properties, partner_properties))
    return with_partner(data), f"the other phase does not lie on its voxel grid ({differing})"


def case_phases(metadata: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Case id -> (subject, ``ED``/``ES``) for the cases of ``metadata`` (a ``cases.csv`` table indexed by case
    id) whose phase it gives, or, without a phase column, whose name ends in ``_ED``/``_ES``; read as
    prediction reads them (:func:`autocmr.evaluation.clinical.subject_and_phase`: ``ed``, ``End-Systole``...),
    so that a model is trained and cross-validated with the pairs it is given in use."""
    phases = {}
    for case_id in map(str, metadata.index):
        subject, phase = subject_and_phase(case_id, metadata)
        if subject is not None and phase in (ED, ES):
            phases[case_id] = (subject, phase)
    return phases


def subject_pairs(phases: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Each case's other phase, both ways, for subjects with exactly one ED and one ES case in ``phases``
    (case id -> (subject, phase)); other cases are left out."""
    by_subject: dict[str, dict[str, list[str]]] = {}
    for case_id, (subject, phase) in phases.items():
        if phase in (ED, ES):
            by_subject.setdefault(subject, {}).setdefault(phase, []).append(case_id)
    pairs: dict[str, str] = {}
    for cases in by_subject.values():
        if len(cases.get(ED, [])) == 1 and len(cases.get(ES, [])) == 1:
            ed, es = cases[ED][0], cases[ES][0]
            pairs[ed], pairs[es] = es, ed
    return pairs


def phase_partners(phases: Mapping[str, tuple[str, str]],
                   properties: Callable[[str], Mapping[str, Any]]) -> dict[str, str]:
    """:func:`subject_pairs` whose two preprocessed cases are :func:`aligned` (``properties`` of a case id);
    other cases are paired with themselves, and a pair that does not align is logged."""
    partners: dict[str, str] = {}
    misaligned = []
    for case_id, other in sorted(subject_pairs(phases).items()):
        if phases[case_id][1] != ED:  # each pair once, from its ED case
            continue
        if aligned(properties(case_id), properties(other)):
            partners[case_id], partners[other] = other, case_id
        else:
            misaligned.append(phases[case_id][0])
    if misaligned:
        logger.warning("other phase: the ED and ES volumes of %d subject(s) do not lie on the same voxel grid "
                       "(e.g. %s); each is paired with itself", len(misaligned), misaligned[0])
    return partners
