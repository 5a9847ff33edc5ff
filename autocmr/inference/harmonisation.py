"""Test-time intensity harmonisation: histogram matching to the training set's intensity distribution.

The reference is the mean quantile curve of the training cases after autocmr's own normalisation,
stored in the model folder (``intensity_reference.json``). At prediction time each (normalised) image's
quantiles are mapped piecewise-linearly onto it. Off by default: whether it helps is measured in the
cross-domain benchmark, not assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from autocmr.errors import PlansError
from autocmr.io.atomic import write_json_atomic

REFERENCE_JSON = "intensity_reference.json"
QUANTILES = tuple(float(q) for q in np.linspace(0, 100, 101))  # every percentile, min and max included


def quantile_curve(image: np.ndarray) -> np.ndarray:
    return np.percentile(image.ravel(), QUANTILES).astype(np.float64)


def match_histogram(image: np.ndarray, source_q: np.ndarray, reference_q: np.ndarray) -> np.ndarray:
    """Map ``image`` so that its quantiles ``source_q`` land on ``reference_q`` (monotone, piecewise linear)."""
    xp = np.maximum.accumulate(source_q) + np.arange(len(source_q)) * 1e-9  # strictly increasing for interp
    return np.interp(image, xp, reference_q).astype(np.float32)


@dataclass(frozen=True)
class Harmoniser:
    reference: tuple[np.ndarray, ...]  # one quantile curve per channel

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Histogram-match each channel of normalised ``data`` (c, z, y, x)."""
        out = np.empty_like(data, dtype=np.float32)
        for c in range(data.shape[0]):
            out[c] = match_histogram(data[c], quantile_curve(data[c]), self.reference[c])
        return out

    @classmethod
    def from_model_folder(cls, model) -> "Harmoniser":
        stored = model.read_json(REFERENCE_JSON)
        if not stored or "quantiles" not in stored:
            raise PlansError(f"{model.path}: no {REFERENCE_JSON} (intensity statistics of the training set); "
                             "this model was trained before harmonisation existed; retrain or predict without "
                             "--harmonise")
        return cls(tuple(np.asarray(q, float) for q in stored["quantiles"]))


def build_reference(images: Iterable[np.ndarray]) -> list[list[float]]:
    """Mean quantile curve per channel over preprocessed training images (c, z, y, x)."""
    curves = [np.stack([quantile_curve(img[c]) for c in range(img.shape[0])]) for img in images]
    if not curves:
        raise ValueError("no images to build an intensity reference from")
    return np.mean(np.stack(curves), axis=0).tolist()


def save_reference(path: Path, quantiles: list[list[float]]) -> None:
    write_json_atomic(path, {"quantiles_percent": list(QUANTILES), "quantiles": quantiles,
                             "space": "after autocmr normalisation and resampling"})
