"""Largest-connected-component postprocessing, applied only where cross-validation showed it helps.

Two steps, as the decision procedure tests them: (1) keep the largest component of all foreground
together, (2) for each label, keep its largest component. Each step is kept only if it does not lower the
mean Dice over validation cases.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from autocmr.documents.layout import POSTPROCESSING
from autocmr.errors import DocumentError
from autocmr.io.atomic import write_json_atomic

_REDO = "the document is corrupt or was edited; copy it again from its source"
CONNECTIVITY_3D = ndimage.generate_binary_structure(3, 1)  # face neighbours; thick slices touch by faces


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest connected component of ``mask`` (empty stays empty)."""
    labelled, n = ndimage.label(mask, structure=CONNECTIVITY_3D if mask.ndim == 3 else None)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(sizes.argmax())


def keep_largest_foreground(label: np.ndarray) -> np.ndarray:
    out = label.copy()
    out[~largest_component(label > 0)] = 0
    return out


def keep_largest_per_label(label: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    out = label.copy()
    for value in labels:
        mask = label == value
        if mask.any():
            out[mask & ~largest_component(mask)] = 0
    return out


@dataclass(frozen=True)
class PostprocessingDecision:
    foreground_lcc: bool = False
    per_label_lcc: tuple[int, ...] = ()
    evidence: dict = field(default_factory=dict)  # mean Dice with/without each step, for the record

    def apply(self, label: np.ndarray) -> np.ndarray:
        if self.foreground_lcc:
            label = keep_largest_foreground(label)
        if self.per_label_lcc:
            label = keep_largest_per_label(label, self.per_label_lcc)
        return label

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def from_dict(cls, d: Any, source: str | Path = POSTPROCESSING) -> "PostprocessingDecision":
        """The decision stored in ``d`` (a model's ``postprocessing.json``, a selection's chosen postprocessing);
        ``source`` names it in the :class:`DocumentError` a malformed one raises (a string where a flag or a
        label belongs would otherwise be read as another decision: ``bool("false")`` is True)."""
        if not isinstance(d, dict):
            raise DocumentError(f"{source}: the postprocessing decision must be a JSON object, not "
                                f"{type(d).__name__}; {_REDO}")
        foreground = d.get("foreground_lcc", False)
        if not isinstance(foreground, bool):
            raise DocumentError(f"{source}: 'foreground_lcc' must be true or false, not {foreground!r}; {_REDO}")
        labels = d.get("per_label_lcc", [])
        if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise DocumentError(f"{source}: 'per_label_lcc' must be a list of label values (integers), not "
                                f"{labels!r}; {_REDO}")
        evidence = d.get("evidence", {})
        if not isinstance(evidence, dict):
            raise DocumentError(f"{source}: 'evidence' must be a JSON object, not {type(evidence).__name__}; {_REDO}")
        return cls(foreground, tuple(labels), dict(evidence))


def _dice(ref: np.ndarray, pred: np.ndarray) -> float:
    a, b = int(ref.sum()), int(pred.sum())
    if a + b == 0:
        return 1.0
    return 2.0 * int(np.logical_and(ref, pred).sum()) / (a + b)


def decide_postprocessing(pairs: Iterable[tuple[np.ndarray, np.ndarray]], labels: Sequence[int],
                          *, tolerance: float = 0.0) -> PostprocessingDecision:
    """Choose the LCC steps from (reference, prediction) pairs of validation cases."""
    pairs = list(pairs)
    if not pairs:
        return PostprocessingDecision(evidence={"note": "no validation cases: no postprocessing"})

    def mean_dice(fn: Callable[[np.ndarray], np.ndarray], values: Sequence[int], merged: bool) -> float:
        scores = []
        for ref, pred in pairs:
            p = fn(pred)
            if merged:
                scores.append(_dice(ref > 0, p > 0))
            else:
                scores += [_dice(ref == v, p == v) for v in values]
        return float(np.mean(scores))

    base_fg = mean_dice(lambda p: p, labels, True)
    lcc_fg = mean_dice(keep_largest_foreground, labels, True)
    use_fg = lcc_fg >= base_fg - tolerance
    first = keep_largest_foreground if use_fg else (lambda p: p)
    evidence = {"foreground": {"without": base_fg, "with": lcc_fg}}
    chosen = []
    for v in labels:
        without = mean_dice(first, [v], False)
        with_ = mean_dice(lambda p, v=v: keep_largest_per_label(first(p), [v]), [v], False)
        evidence[f"label_{v}"] = {"without": without, "with": with_}
        if with_ >= without - tolerance and with_ != without:
            chosen.append(v)
    return PostprocessingDecision(use_fg and lcc_fg != base_fg, tuple(chosen), evidence)
