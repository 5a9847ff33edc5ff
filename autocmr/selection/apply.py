"""Segment new images with a configuration chosen by :mod:`autocmr.selection.find_best`.

A single model runs as ``autocmr_predict`` would, with the selection's folds and postprocessing. An ensemble
runs each member over the input with ``save_probabilities`` into ``OUT/.ensemble_members/<name>/``, then
averages the members' native-space probabilities case by case (softmax average, as in the cross-validation
that chose it), takes the argmax, applies the selection's postprocessing and writes ``OUT/NAME.nii.gz``
with the input's geometry (4D cines get 4D masks). The members' folders are kept, so ``continue_`` resumes.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from autocmr.errors import AutocmrError
from autocmr.inference.batch import BatchReport, predict_folder
from autocmr.inference.inputs import OUTPUT_SUFFIX, PROBABILITIES_SUFFIX, CaseFailure
from autocmr.inference.postprocessing import PostprocessingDecision
from autocmr.inference.predictor import PredictorOptions
from autocmr.io.cine import write_cine
from autocmr.io.image import read_image, write_image
from autocmr.selection.document import Selection

logger = logging.getLogger(__name__)
MEMBERS_DIR = ".ensemble_members"


def _postprocess_file(path: Path, decision: PostprocessingDecision) -> None:
    label, geometry = read_image(path)
    _write_mask(label, geometry, path, decision)


def _write_mask(label: np.ndarray, geometry, path: Path, decision: PostprocessingDecision) -> None:
    if geometry.dim == 4:
        write_cine(np.stack([decision.apply(frame) for frame in label]).astype(np.uint8), geometry, path)
    else:
        write_image(decision.apply(label).astype(np.uint8), geometry, path)


def _has_postprocessing(decision: PostprocessingDecision) -> bool:
    return decision.foreground_lcc or bool(decision.per_label_lcc)


def predict_with_selection(input_path: str | Path, output_dir: str | Path, selection: Selection | str | Path, *,
                           options: PredictorOptions | None = None, continue_: bool = False,
                           num_workers: int | None = None) -> BatchReport:
    """Segment every image of ``input_path`` with the selection's model or ensemble into ``output_dir``.

    ``options`` sets device, mirroring and step; folds, checkpoint and postprocessing come from the
    selection. Returns the report of the (last) member's run with the ensemble's failures merged in.
    """
    if not isinstance(selection, Selection):
        selection = Selection.load(selection)
    out = Path(output_dir).expanduser()
    base = replace(options or PredictorOptions(), checkpoint=selection.checkpoint, postprocess="off")
    decision = selection.postprocessing
    if len(selection.members) == 1:
        member = selection.members[0]
        report = predict_folder(input_path, out, member.model, options=replace(base, folds=member.folds),
                                continue_=continue_, num_workers=num_workers)
        if _has_postprocessing(decision):
            for name in report.done:
                _postprocess_file(out / f"{name}{OUTPUT_SUFFIX}", decision)
        return report
    reports = []
    for member in selection.members:
        folder = out / MEMBERS_DIR / member.name
        logger.info("ensemble member %s (folds %s)", member.name, ",".join(member.folds))
        reports.append(predict_folder(input_path, folder, member.model, options=replace(base, folds=member.folds),
                                      continue_=continue_, save_probabilities=True, num_workers=num_workers))
    return _combine(selection, reports, out, continue_)


def _combine(selection: Selection, reports: list[BatchReport], out: Path, continue_: bool) -> BatchReport:
    folders = [out / MEMBERS_DIR / m.name for m in selection.members]
    names = sorted(set.intersection(*[set(r.done) | set(r.skipped) for r in reports]))
    combined = BatchReport(out, failures=[f for r in reports for f in r.failures])
    for name in names:
        target = out / f"{name}{OUTPUT_SUFFIX}"
        if continue_ and target.is_file():
            combined.skipped.append(name)
            continue
        try:
            probs = []
            for folder in folders:
                with np.load(folder / f"{name}{PROBABILITIES_SUFFIX}") as data:
                    probs.append(data["probabilities"].astype(np.float32))
            mean = np.mean(probs, axis=0)
            _, geometry = read_image(folders[0] / f"{name}{OUTPUT_SUFFIX}")
            label = np.argmax(mean, axis=1 if geometry.dim == 4 else 0).astype(np.uint8)
            _write_mask(label, geometry, target, selection.postprocessing)
        except (OSError, ValueError, KeyError, AutocmrError) as exc:
            combined.failures.append(CaseFailure(name, str(folders[0]), f"ensemble failed: {exc}"))
            continue
        combined.done.append(name)
    combined.wall_s = sum(r.wall_s for r in reports)
    return combined


__all__ = ["MEMBERS_DIR", "predict_with_selection"]
