"""Intensity normalisation schemes, chosen per channel by name (a plain registry)."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from autocmr.documents.plans import IntensityStats
from autocmr.errors import ConfigurationError

EPS = 1e-8
STD_CHUNK = 1 << 16  # values per float64 block of the standard deviation (512 KiB)


def zscore(image: np.ndarray, mask: np.ndarray | None, stats: IntensityStats | None) -> np.ndarray:
    """Per-image z-score (MR: intensities have no absolute meaning). Statistics from ``mask`` if given;
    voxels outside the mask are set to 0 so zero padding stays constant."""
    values = image[mask] if mask is not None else image
    if values.size == 0:
        values = image
    # statistics in float64: float32 squares overflow above ~1e19 and vanish below ~1e-23, so an image stored
    # at an extreme scale (some exports write floats scaled by 1e20) would normalise to noise
    mean = float(values.mean(dtype=np.float64))
    std = _std(values, mean)
    scale = std if std > 0 and np.isfinite(std) else 1.0  # a constant image: only shifted to 0
    if np.float32(scale) >= np.finfo(np.float32).tiny:
        # applying them needs no float64 copies (two full-size float64 arrays per channel were 4-5x the image)
        out = image.astype(np.float32, copy=True)
        out -= np.float32(mean)
        out /= np.float32(scale)
    else:  # a spread below float32's range: only float64 holds the quotient's inputs
        out = ((image.astype(np.float64) - mean) / scale).astype(np.float32)
    if mask is not None:
        out[~mask] = 0
    return out


def _std(values: np.ndarray, mean: float) -> float:
    """Population standard deviation in float64, a block at a time (``np.std`` makes a float64 copy of the
    whole image: twice a float32 image's size, per channel, in every preprocessing worker)."""
    flat = values.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, STD_CHUNK):
        deviation = flat[start:start + STD_CHUNK].astype(np.float64) - mean
        total += float(np.dot(deviation, deviation))
    return float(np.sqrt(total / max(flat.size, 1)))


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


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """Voxels that are not padding: nonzero in some channel, with the holes of each slice filled. Integer MR
    images hold exact zeros inside the field of view (air, lungs at the noise floor); left out of the mask they
    would be set to 0, the tissue mean, a salt-and-pepper pattern that follows each scanner's noise floor. Only
    zeros connected to the slice's border (padding, a rotated acquisition's corners) stay outside."""
    nonzero = np.any(data != 0, axis=0)
    if nonzero.ndim != 3:
        return ndimage.binary_fill_holes(nonzero)
    # axis 0 is through-plane: fill each slice on its own (in 3D the first and last slices are all border)
    return np.stack([ndimage.binary_fill_holes(s) for s in nonzero])


def normalize(data: np.ndarray, schemes: tuple[str, ...], use_mask: tuple[bool, ...],
              stats: tuple[IntensityStats, ...] | None) -> np.ndarray:
    """Normalise each channel of ``data`` (c, ...) with its scheme."""
    out = np.empty(data.shape, np.float32)
    mask = foreground_mask(data) if any(use_mask) else None
    for c, scheme in enumerate(schemes):
        if scheme not in NORMALIZATIONS:
            raise ConfigurationError(f"unknown normalisation {scheme!r}; valid: {sorted(NORMALIZATIONS)}")
        out[c] = NORMALIZATIONS[scheme](data[c].astype(np.float32, copy=False),
                                        mask if use_mask[c] else None, stats[c] if stats else None)
    return out
