"""The autocmr label convention and the conventions of the public cardiac datasets we convert from.

Inside autocmr (as UK Biobank and M&Ms): 0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity. Also the values a
label map holds, checked to be integers (:func:`label_values`, used by the converters and the integrity check).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autocmr.errors import InputFileError

AUTOCMR_LABELS: dict[str, int] = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
LV, MYO, RV = AUTOCMR_LABELS["LV"], AUTOCMR_LABELS["MYO"], AUTOCMR_LABELS["RV"]

# ACDC ground truth: 1 RV cavity, 2 LV myocardium, 3 LV cavity (Bernard et al., IEEE TMI 2018).
ACDC_TO_AUTOCMR: dict[int, int] = {0: 0, 1: RV, 2: MYO, 3: LV}
# M&Ms ground truth already matches: 1 LV, 2 MYO, 3 RV (Campello et al., IEEE TMI 2021).
MNMS_TO_AUTOCMR: dict[int, int] = {0: 0, 1: LV, 2: MYO, 3: RV}


def remap_labels(label: np.ndarray, mapping: dict[int, int], *, source: str = "label map") -> np.ndarray:
    """Map label values through ``mapping``; values not in it raise ``ValueError`` naming them."""
    values = np.unique(label)
    unknown = sorted(int(v) for v in values if int(v) not in mapping)
    if unknown:
        raise ValueError(f"{source}: label values {unknown} are not in the expected set {sorted(mapping)}")
    lut = np.zeros(max(int(values.max(initial=0)), max(mapping)) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[label.astype(np.int64, copy=False)]


def label_values(label: np.ndarray, path: str | Path) -> list[int]:
    """Distinct values of a label array; non-integer values raise :class:`InputFileError` naming ``path``."""
    if np.issubdtype(label.dtype, np.unsignedinteger):
        return [int(v) for v in np.flatnonzero(np.bincount(label.ravel()))]  # much faster than np.unique
    values = np.unique(label)
    if not np.issubdtype(label.dtype, np.integer):
        fractional = values[~np.isfinite(values) | (np.round(values) != values)]
        if fractional.size:
            raise InputFileError(path, f"non-integer label values {fractional[:5].tolist()}")
    return [int(v) for v in values]
