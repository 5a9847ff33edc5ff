"""Segment new images with a configuration chosen by :mod:`autocmr.selection.find_best`.

A single model runs as ``autocmr_predict`` would, with the selection's folds, and its predictor applies the
selection's postprocessing as it writes each mask (a mask on disk is final: ``continue_`` leaves the masks it
skips as they are). An ensemble runs each member over the input with ``save_probabilities`` into
``OUT/.ensemble_members/<name>/``, then averages the members' native-space probabilities case by case (softmax
average, as in the cross-validation that chose it), takes the argmax, applies the selection's postprocessing and
writes ``OUT/NAME.nii.gz`` with the input's geometry (4D cines get 4D masks). An ensemble predicts every frame of
a 4D cine at full accuracy (``--cine full``): the fast cine path picks its full-accuracy frames from each
member's own volume curve, so the members' frames would differ and fast-pass probabilities would be averaged
with full-accuracy ones. The members' folders are kept, so ``continue_`` resumes.

Either way ``OUT/predictions.json`` records the masks as any batch does (the members' case records, the
masks' paths in ``OUT``, a predictor naming the selection and its postprocessing), so the clinical analysis
(measures, QC, report) reads ``OUT`` like any other output folder (``analyse_output_folder``).
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from autocmr.documents.layout import BATCH_PREDICTIONS
from autocmr.errors import AutocmrError, ConfigurationError
from autocmr.inference.batch import BatchReport, predict_folder
from autocmr.inference.batch_report import stored_predictors, write_batch_record
from autocmr.inference.batch_settings import setting_differences
from autocmr.inference.fast_cine import CineOptions
from autocmr.inference.inputs import (IMAGES_FROM_DICOM, OUTPUT_SUFFIX, OVERWRITES_INPUT, PROBABILITIES_SUFFIX,
                                     CaseFailure, discover_jobs)
from autocmr.inference.postprocessing import PostprocessingDecision
from autocmr.inference.predictor import PredictorOptions
from autocmr.io.atomic import atomic_path
from autocmr.io.cine import write_cine
from autocmr.io.image import read_image, write_image
from autocmr.selection.document import Selection

logger = logging.getLogger(__name__)
MEMBERS_DIR = ".ensemble_members"
# the settings of a batch record's predictor that say how its masks were made, as a selection's record keeps
# them (its model, folds and weights are its members'): a continued run must share them
CONTINUED_SETTINGS = ("configuration", "mirror_axes", "step", "precision", "harmonise", "cine", "postprocessing")


def _write_mask(label: np.ndarray, geometry, path: Path, decision: PostprocessingDecision) -> None:
    if geometry.dim == 4:
        write_cine(np.stack([decision.apply(frame) for frame in label]).astype(np.uint8), geometry, path)
    else:
        write_image(decision.apply(label).astype(np.uint8), geometry, path)


def predict_with_selection(input_path: str | Path, output_dir: str | Path, selection: Selection | str | Path, *,
                           options: PredictorOptions | None = None, continue_: bool = False,
                           num_workers: int | None = None, cine: CineOptions | None = None,
                           phase_pairs: Any = None) -> BatchReport:
    """Segment every image of ``input_path`` with the selection's model or ensemble into ``output_dir``.

    ``options`` sets device, mirroring and step; folds, checkpoint and postprocessing come from the
    selection; ``cine`` how 4D cines are predicted (an ensemble: every frame at full accuracy, see the module
    doc) and ``phase_pairs`` how members that take the other cardiac phase find it (both as
    ``predict_folder``'s). Returns the report of the (last) member's run with the ensemble's failures merged in.
    """
    source = None if isinstance(selection, Selection) else Path(selection)
    if not isinstance(selection, Selection):
        selection = Selection.load(selection)
    out = Path(output_dir).expanduser()
    _check_output(input_path, out)
    if continue_:
        _check_continued_record(out, selection)
    base = replace(options or PredictorOptions(), checkpoint=selection.checkpoint, postprocess="off")
    differences = selection.settings_differences(base)
    if differences:  # allowed (a faster pass without mirroring), but the recorded figures are not of this run
        logger.warning("predicting with other settings than the selection's cross-validation figures were measured "
                       "with (%s): the figures in selection.json do not describe these predictions exactly",
                       "; ".join(differences))
    cine = cine or CineOptions()
    if len(selection.members) == 1:
        member = selection.members[0]
        predictor = replace(base, folds=member.folds).build(member.model)
        # the predictor postprocesses each mask as it writes it: a mask on disk is final, so --continue skips it
        # as it is (postprocessing is not idempotent, and a second pass would alter a mask already final)
        predictor.postprocessing = selection.postprocessing
        if continue_:
            _check_continued_settings(out, {**predictor.describe(), "cine": cine.describe()})
        # its predictions.json is rewritten below as the selection's record, which is not a plain predictor's:
        # the settings were checked above instead
        report = predict_folder(input_path, out, predictor, continue_=continue_, num_workers=num_workers, cine=cine,
                                phase_pairs=phase_pairs, check_settings=False)
        _record_batch(out, [out], selection, source, report, input_path)
        return report
    if cine.mode != "full":
        logger.info("an ensemble predicts every frame of a 4D cine at full accuracy (the members' fast paths would "
                    "pick different frames)")
        cine = replace(cine, mode="full")
    reports = []
    for member in selection.members:
        folder = out / MEMBERS_DIR / member.name
        logger.info("ensemble member %s (folds %s)", member.name, ",".join(member.folds))
        reports.append(predict_folder(input_path, folder, member.model, options=replace(base, folds=member.folds),
                                      continue_=continue_, save_probabilities=True, num_workers=num_workers,
                                      cine=cine, phase_pairs=phase_pairs))
    combined = _combine(selection, reports, out, continue_)
    _record_batch(out, [out / MEMBERS_DIR / m.name for m in selection.members], selection, source, combined,
                  input_path)
    return combined


def _check_continued_record(out: Path, selection: Selection) -> None:
    """``--continue`` skips the masks already in ``out``: refuse when its record says another model or another
    selection made them (a one-member selection predicts into ``out`` itself, an ensemble writes its averaged
    masks there), which would leave masks made two ways under one record."""
    record = out / BATCH_PREDICTIONS
    try:
        stored = json.loads(record.read_text()).get("predictor") if record.is_file() else None
    except (OSError, ValueError):
        return  # unreadable: the run rewrites it, as a plain one does
    if not isinstance(stored, dict):
        return
    current = _identity(selection)
    earlier = {key: stored.get(key) for key in current}
    if "members" not in stored and len(selection.members) == 1:  # a one-member run killed before its record
        member = selection.members[0]  # became the selection's: its member's own record, which is fine
        model = stored.get("model")
        if (isinstance(model, str) and Path(model).expanduser().resolve() == Path(member.model).resolve()
                and stored.get("folds") == list(member.folds)):
            return
    if earlier != current:
        made_by = (f"selection {stored.get('name')!r} ({stored.get('members')})" if "members" in stored
                   else f"model {stored.get('model')}")
        raise ConfigurationError(f"{record}: its masks were made by {made_by}, not by selection {selection.name!r} "
                                 f"({current['members']}); --continue would mix the two in one folder. Predict into "
                                 "another folder, or run without --continue to predict every case again")


def _check_continued_settings(out: Path, description: dict[str, Any]) -> None:
    """``--continue`` with a one-member selection: refuse masks made with other settings (mirroring, step,
    precision, cine mode, postprocessing), as a plain ``-m MODEL`` run and an ensemble's members do. The folder's
    record is the selection's (only the settings it keeps are compared) or, for a run killed before that record,
    its member's own (compared as a plain run compares)."""
    for name, stored in stored_predictors(out).items():
        if "members" in stored:
            differences = setting_differences({k: stored.get(k) for k in CONTINUED_SETTINGS},
                                              {k: description.get(k) for k in CONTINUED_SETTINGS})
        else:
            differences = setting_differences(stored, description)
        if differences:
            raise ConfigurationError(f"{out / name}: its masks were predicted with other settings "
                                     f"({'; '.join(differences)}); --continue would mix the two in one folder. "
                                     "Predict into another folder, or run without --continue to predict every "
                                     "case again")


def _identity(selection: Selection) -> dict[str, Any]:
    """What says which selection made a folder's masks (in its predictions.json's ``predictor``)."""
    return {"name": selection.name, "members": [{"name": m.name, "model": str(m.model), "folds": list(m.folds)}
                                                for m in selection.members]}


def _check_output(input_path: str | Path, out: Path) -> None:
    """The members predict into ``out/members/``, but the selection's masks go to ``out``: the checks that
    discovery makes for a plain run (``out`` is not the input folder, no mask replaces an input file) are
    made here for ``out`` itself."""
    clashes = [p for p in discover_jobs(input_path, out).problems if p.reason == OVERWRITES_INPUT]
    if clashes:
        raise ConfigurationError(f"{clashes[0].file}: {OVERWRITES_INPUT}")


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


def _record_batch(out: Path, member_dirs: list[Path], selection: Selection, source: Path | None,
                  report: BatchReport, input_path: str | Path) -> None:
    """``OUT/predictions.json`` and ``failures.json`` for the selection's masks (see the module docstring)."""
    records = _member_records(member_dirs)
    cases: dict[str, Any] = {}
    for name in [*report.done, *report.skipped]:
        entries = [r["cases"][name] for r in records if name in r.get("cases", {})]
        if entries:
            cases[name] = _case_entry(name, entries, out)
            if cases[name].get("kind") == "dicom" and member_dirs[0] != out:
                _copy_dicom_image(member_dirs[0], out, name)
    write_batch_record(report, _predictor(selection, source, records), input_path, cases)  # report.output_dir is out


def _member_records(member_dirs: list[Path]) -> list[dict[str, Any]]:
    records = []
    for folder in member_dirs:
        try:
            records.append(json.loads((folder / BATCH_PREDICTIONS).read_text()))
        except (OSError, ValueError) as exc:
            logger.warning("%s: no batch record to carry over (%s)", folder, exc)
    return records


def _case_entry(name: str, entries: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The first member's record of a case with the mask in ``out``; the uncertainty per frame is the
    largest of the members' scores."""
    entry = dict(entries[0], output=str(out / f"{name}{OUTPUT_SUFFIX}"))
    scores = [e.get("uncertainty") or [] for e in entries]
    if all(len(u) == len(scores[0]) for u in scores):
        entry["uncertainty"] = [max((v for v in frame if v is not None), default=None) for frame in zip(*scores)]
    return entry


def _copy_dicom_image(member_dir: Path, out: Path, name: str) -> None:
    """The NIfTI copy of a DICOM input the first member wrote, for the analysis' figures of ``out``."""
    copy = member_dir / IMAGES_FROM_DICOM / f"{name}{OUTPUT_SUFFIX}"
    target = out / IMAGES_FROM_DICOM / copy.name
    if copy.is_file() and not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(copy, tmp)


def _predictor(selection: Selection, source: Path | None, records: list[dict[str, Any]]) -> dict[str, Any]:
    first = (records[0].get("predictor") or {}) if records else {}
    predictor = {key: first[key] for key in ("configuration", "device", "mirror_axes", "step", "precision",
                                             "harmonise", "cine") if key in first}
    # "selection_created" tells the analysis whether selection.json still holds the figures of this selection
    predictor.update(selection=str(source) if source is not None else None, **_identity(selection),
                     selection_created=selection.record.get("created"),
                     postprocessing={"foreground_lcc": selection.postprocessing.foreground_lcc,
                                     "per_label_lcc": list(selection.postprocessing.per_label_lcc)})
    return predictor


__all__ = ["MEMBERS_DIR", "predict_with_selection"]
