"""Intensity normalisation schemes, chosen per channel by name (a plain registry)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from autocmr.documents.plans import IntensityStats
from autocmr.errors import ConfigurationError

EPS = 1e-8


def zscore(image: np.ndarray, mask: np.ndarray | None, stats: IntensityStats | None) -> np.ndarray:
    """Per-image z-score (MR: intensities have no absolute meaning). Statistics from ``mask`` if given;
    voxels outside the mask are set to 0 so zero padding stays constant."""
    values = image[mask] if mask is not None else image
    if values.size == 0:
        values = image
    # in float64: float32 squares overflow above ~1e19 and vanish below ~1e-23, so an image stored at an
    # extreme scale (some exports write floats scaled by 1e20) would normalise to noise
    mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
    scale = std if std > 0 and np.isfinite(std) else 1.0  # a constant image: only shifted to 0
    out = (image.astype(np.float64) - mean) / scale
    if mask is not None:
        out[~mask] = 0
    return out.astype(np.float32)


def ct(image: np.ndarray, mask: np.ndarray | None, stats: IntensityStats | None) -> np.ndarray:
    """Dataset-wide clipping and z-score (Hounsfield units are absolute)."""
    if stats is None:
        raise ConfigurationError("CT normalisation needs the dataset intensity statistics from the plans")
    out = np.clip(image, stats.p00_5, stats.p99_5)
    return ((out - stats.mean) / max(stats.std, EPS)).astype(np.float32, copy=False)


def identity(image: np.ndarray, mask: np.ndarray | None, stats: IntensityStats | None) -> np.ndarray:
    return image.astype(np.float32, copy=False)


NORMALIZATIONS: dict[str, Callable[[np.ndarray, np.ndarray | None, IntensityStats | None], np.ndarray]] = {
    "zscore": zscore, "ct": ct, "none": identity,
}


def scheme_for_channel(channel_name: str) -> str:
    """Default scheme from a dataset.json channel name: CT gets ``ct``, everything else (MR) ``zscore``."""
    return "ct" if channel_name.strip().upper() == "CT" else "zscore"


def normalize(data: np.ndarray, schemes: tuple[str, ...], use_mask: tuple[bool, ...],
              stats: tuple[IntensityStats, ...] | None) -> np.ndarray:
    """Normalise each channel of ``data`` (c, ...) with its scheme."""
    out = np.empty(data.shape, np.float32)
    mask = np.any(data != 0, axis=0) if any(use_mask) else None
    for c, scheme in enumerate(schemes):
        if scheme not in NORMALIZATIONS:
            raise ConfigurationError(f"unknown normalisation {scheme!r}; valid: {sorted(NORMALIZATIONS)}")
        out[c] = NORMALIZATIONS[scheme](data[c].astype(np.float32, copy=False),
                                        mask if use_mask[c] else None, stats[c] if stats else None)
    return out
