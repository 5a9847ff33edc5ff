"""Finding, reading and checking the cases of an evaluation; turning one case into per-class metric rows.

Every problem with one case (unreadable file, geometry or shape mismatch, unexpected label values, missing
prediction) becomes a :class:`CaseFailure`; the rest of the cases are still evaluated.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.dataset.labels import AUTOCMR_LABELS
from autocmr.dataset.raw import read_case_table
from autocmr.errors import ConfigurationError, DatasetError, InputFileError
from autocmr.evaluation.clinical import (REF_SLICES, annotated_frames, frame_case_id, normalise_phase, slices_with,
                                         subject_and_phase, warn_unknown_phases)
from autocmr.evaluation.exchanges import exchange_volumes
from autocmr.evaluation.metrics import case_metrics, voxel_volume_ml
from autocmr.evaluation.slice_position import SliceProfile, no_slices_profile, slice_profile
from autocmr.io.completeness import check_complete
from autocmr.io.image import IMAGE_SUFFIXES, Geometry, read_image

logger = logging.getLogger(__name__)

CASES_CSV = "cases.csv"
# Reference files named like ACDC ground truth (``patient001_frame01_gt.nii.gz``) give the case id without
# this suffix, so predictions named ``patient001_frame01.nii.gz`` match them.
REFERENCE_SUFFIX = "_gt"
# Label ranges up to this size are checked with a bincount (fast); larger ones with np.unique.
_BINCOUNT_MAX_LABEL = 1024


@dataclass(frozen=True)
class CaseFailure:
    """A case that could not be evaluated: its id, the file at fault (if any) and why."""

    case_id: str
    file: str | None
    reason: str
    missing: bool = False  # a reference case without a prediction (a subset predicted), not an error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CasePair:
    """A reference file and the prediction file matched to it."""

    case_id: str
    reference: Path
    prediction: Path


def resolve_labels(labels: Mapping[str, int] | str | Path | None) -> dict[str, int]:
    """Foreground classes to evaluate (name -> value, background dropped).

    ``labels`` is a mapping, JSON text, or a JSON file (a plain mapping or a ``dataset.json`` with a
    ``labels`` entry); ``None`` gives the autocmr classes (1 LV, 2 MYO, 3 RV).
    """
    if labels is None:
        labels = AUTOCMR_LABELS
    elif isinstance(labels, (str, Path)):
        labels = _labels_from_json(labels)
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigurationError(f"label {name!r} has value {value!r}; expected an integer")
        if int(value) != 0:
            out[str(name)] = int(value)
    if not out:
        raise ConfigurationError(f"labels {dict(labels)} contain no foreground class (value != 0)")
    if len(set(out.values())) != len(out):
        raise ConfigurationError(f"labels {out} give the same value to several classes")
    return out


def scored_labels(labels: Mapping[str, int], ignore: Sequence[int]) -> dict[str, int]:
    """The classes left to score once the predicted values ``ignore`` count as background: an ignored class
    is not scored (it would be 'empty in both' everywhere, a perfect score for nothing)."""
    left = {name: value for name, value in labels.items() if value not in {int(v) for v in ignore}}
    if not left:
        raise ConfigurationError(f"every class of {dict(labels)} is ignored ({list(ignore)}): nothing to score")
    return left


def _labels_from_json(spec: str | Path) -> Mapping[str, Any]:
    text = str(spec)
    path = Path(text)
    source = text
    if not text.lstrip().startswith("{"):
        if not path.is_file():
            raise ConfigurationError(f"labels {text!r}: neither JSON text nor an existing JSON file")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"labels {source}: not valid JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]  # a dataset.json
    if not isinstance(data, dict):
        raise ConfigurationError(f"labels {source}: expected a JSON object name -> value, got {type(data).__name__}")
    return data


def metadata_source(metadata: pd.DataFrame | str | Path | None, search: Sequence[Path] = ()) -> Path | None:
    """The case table file :func:`load_metadata` reads: ``metadata`` when it is a path, else (None) the first
    ``cases.csv`` in the ``search`` folders; None for an in-memory table or when there is none."""
    if isinstance(metadata, (str, Path)):
        return Path(metadata)
    if metadata is not None:
        return None
    return next((Path(d) / CASES_CSV for d in search if (Path(d) / CASES_CSV).is_file()), None)


def load_metadata(metadata: pd.DataFrame | str | Path | None, *, search: Sequence[Path] = ()) -> pd.DataFrame | None:
    """Case metadata indexed by case id (strings), or None.

    ``metadata`` is a table (with a ``case_id`` column or index) or a CSV path; when None, the first
    ``cases.csv`` found in ``search`` folders is used (a raw dataset keeps it beside ``labelsTr``).
    """
    if metadata is None:
        metadata = metadata_source(None, search)
        if metadata is None:
            return None
        logger.info("using case metadata from %s", metadata)
    source = "metadata table"
    if isinstance(metadata, (str, Path)):
        source = str(metadata)
        if not Path(metadata).is_file():
            raise DatasetError(f"{metadata}: metadata file not found")
        try:
            table = read_case_table(metadata)  # headers as spreadsheets write them (" subject", "Subject")
        except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
            raise DatasetError(f"{metadata}: cannot read the metadata table ({type(exc).__name__}: {exc})") from exc
    else:
        table = metadata.copy()
        if "case_id" not in table.columns:
            table = table.rename_axis("case_id").reset_index()
    table.columns = [str(c).strip() for c in table.columns]  # "case_id, group" written with spaces
    if "case_id" not in table.columns:
        raise DatasetError(f"{source}: needs a 'case_id' column, found {list(table.columns)}")
    table["case_id"] = table["case_id"].astype(str).str.strip()
    dupes = sorted(table.loc[table["case_id"].duplicated(), "case_id"].unique())
    if dupes:
        raise DatasetError(f"{source}: duplicated case ids {dupes[:5]}")
    table = table.set_index("case_id")
    warn_unknown_phases(table, source)
    return table


def case_info(case_ids: Sequence[str], metadata: pd.DataFrame | None) -> pd.DataFrame:
    """Metadata rows for ``case_ids`` with ``subject`` and ``phase`` completed from the ids when absent."""
    info = (metadata.reindex(list(case_ids)) if metadata is not None
            else pd.DataFrame(index=pd.Index(list(case_ids), name="case_id")))
    inferred = [subject_and_phase(c, metadata) for c in info.index]
    for col, pos in (("subject", 0), ("phase", 1)):
        guess = pd.Series([g[pos] for g in inferred], index=info.index, dtype=object)
        info[col] = info[col].where(info[col].notna(), guess) if col in info.columns else guess
    info["subject"] = info["subject"].where(info["subject"].notna(), pd.Series(info.index, index=info.index))
    info["phase"] = info["phase"].map(normalise_phase)  # "ed", "End-Diastole": one ED group everywhere
    return info


def match_files(reference_dir: Path, prediction_dir: Path | Sequence[Path], file_ending: str
                ) -> tuple[list[CasePair], list[CaseFailure], list[str]]:
    """Pair reference and prediction files; returns pairs, references without prediction, unused predictions.

    A reference ``CASE<ending>`` (or ``CASE_gt<ending>``) matches the prediction ``CASE<ending>``, or one
    named exactly like the reference; where both ``CASE`` and ``CASE_gt`` are in the reference folder (an
    ACDC patient folder: the image beside its labels), ``CASE_gt`` is the reference. Hidden files
    (temporaries) are ignored. Several prediction folders (e.g. the ``fold_N/validation`` folders of a
    cross-validation) are pooled; a file name found in two of them raises :class:`DatasetError`.
    """
    def listing(folder: Path) -> dict[str, Path]:
        return {f.name: f for f in sorted(folder.iterdir())
                if f.is_file() and f.name.endswith(file_ending) and not f.name.startswith(".")}

    folders = [Path(prediction_dir)] if isinstance(prediction_dir, (str, Path)) else [Path(f) for f in prediction_dir]
    refs, preds = listing(reference_dir), {}
    for folder in folders:
        for name, path in listing(Path(folder)).items():
            if name in preds:
                raise DatasetError(f"prediction {name} is in two folders: {preds[name]} and {path}")
            preds[name] = path
    if not refs:
        raise DatasetError(f"{reference_dir}: no reference files ending in {file_ending}")
    # an ACDC patient folder holds CASE (the image) beside CASE_gt (its reference): the image is no reference
    refs = {name: ref for name, ref in refs.items()
            if not (not name[: -len(file_ending)].endswith(REFERENCE_SUFFIX)
                    and name[: -len(file_ending)] + REFERENCE_SUFFIX + file_ending in refs)}
    pairs, missing, used = [], [], set()
    for name, ref in refs.items():
        case_id = name[: -len(file_ending)]
        if case_id.endswith(REFERENCE_SUFFIX) and len(case_id) > len(REFERENCE_SUFFIX):
            case_id = case_id[: -len(REFERENCE_SUFFIX)]
        candidates = [n for n in (case_id + file_ending, name) if n in preds]
        if candidates:
            used.add(candidates[0])
            pairs.append(CasePair(case_id, ref, preds[candidates[0]]))
        else:
            hint = _other_endings(case_id, folders, file_ending)
            missing.append(CaseFailure(case_id, str(ref), f"no prediction {case_id}{file_ending} in "
                                                          f"{', '.join(map(str, folders))}{hint}", missing=True))
    unmatched = sorted(set(preds) - used)
    return pairs, missing, unmatched


def _other_endings(case_id: str, folders: Sequence[Path], file_ending: str) -> str:
    """A hint when the prediction is there under another file ending (.nii beside .nii.gz references)."""
    for folder in folders:
        for ending in IMAGE_SUFFIXES:
            if ending != file_ending and (folder / f"{case_id}{ending}").is_file():
                return (f" (there is {case_id}{ending}: references and predictions need one file ending, "
                        "--file-ending)")
    return ""


def _label_problem(array: np.ndarray, allowed: set[int], what: str) -> str | None:
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.number) or not np.array_equal(array, np.round(array)):
            return f"{what} has non-integer values (dtype {array.dtype}); expected a label map"
        array = array.astype(np.int64)
    low, high = int(array.min(initial=0)), int(array.max(initial=0))
    if low >= 0 and high <= _BINCOUNT_MAX_LABEL:
        values = np.flatnonzero(np.bincount(array.ravel().astype(np.int64, copy=False), minlength=1))
    else:
        values = np.unique(array)
    unexpected = sorted(int(v) for v in values if int(v) not in allowed)
    if unexpected:
        return f"{what} has unexpected label values {unexpected[:10]} (expected a subset of {sorted(allowed)})"
    return None


def evaluate_arrays(case_id: str, reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                    labels: Mapping[str, int], ignore: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Per-class metric rows of one case; a 4D array (one more axis than ``spacing``) gives rows per frame.

    ``ignore``: predicted label values counted as background (structures the reference does not annotate,
    e.g. the RV when the reference is an LV-only study). Raises ``ValueError`` naming the problem (shape,
    spacing, label values).
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if len(ignore):
        prediction = np.where(np.isin(prediction, list(ignore)), 0, prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    allowed = {0, *labels.values()}
    for array, what in ((reference, "reference"), (prediction, "prediction")):
        problem = _label_problem(array, allowed, what)
        if problem:
            raise ValueError(problem)
    spacing = tuple(float(s) for s in spacing)
    if reference.ndim == len(spacing):
        frames: list[tuple[int | None, np.ndarray, np.ndarray]] = [(None, reference, prediction)]
    elif reference.ndim == len(spacing) + 1:
        frames = [(t, reference[t], prediction[t]) for t in annotated_frames(reference)]
    else:
        raise ValueError(f"spacing {spacing} does not fit arrays of shape {reference.shape}")
    rows = []
    for t, ref, pred in frames:
        cid = case_id if t is None else frame_case_id(case_id, t)
        exchanges = exchange_volumes(ref, pred, labels, voxel_volume_ml(spacing))
        for name, values in case_metrics(ref, pred, spacing, labels).items():
            rows.append({"case_id": cid, "source_case": case_id, "frame": t, "class": name, **values,
                         REF_SLICES: slices_with(ref == labels[name], spacing), **exchanges.get(name, {})})
    return rows


def evaluate_pair(pair: CasePair, labels: Mapping[str, int],
                  ignore: Sequence[int] = ()) -> tuple[list[dict[str, Any]], CaseFailure | None]:
    """Read and evaluate one reference/prediction pair (runs in worker processes: module-level)."""
    rows, _, failure = evaluate_pair_detailed(pair, labels, ignore)
    return rows, failure


def evaluate_pair_detailed(pair: CasePair, labels: Mapping[str, int], ignore: Sequence[int] = (), *,
                           slice_positions: bool = False
                           ) -> tuple[list[dict[str, Any]], list[SliceProfile], CaseFailure | None]:
    """:func:`evaluate_pair` plus, with ``slice_positions``, the per-slice volumes of each 3D case or frame."""
    try:
        for path in (pair.reference, pair.prediction):
            check_complete(path)  # ITK reads a truncated NIfTI with zeros for the missing voxels: a silent wrong score
        ref, ref_geo = read_image(pair.reference)
        pred, pred_geo = read_image(pair.prediction)
    except InputFileError as exc:
        return [], [], CaseFailure(pair.case_id, str(exc.path), exc.reason)
    problems = ref_geo.differences(pred_geo)
    if problems:
        return [], [], CaseFailure(pair.case_id, str(pair.prediction),
                                   "geometry differs from the reference: " + "; ".join(problems))
    spacing = ref_geo.spatial().spacing_zyx if ref_geo.dim == 4 else ref_geo.spacing_zyx
    try:
        rows = evaluate_arrays(pair.case_id, ref, pred, spacing, labels, ignore)
    except ValueError as exc:
        faulty = pair.reference if str(exc).startswith("reference") else pair.prediction
        return [], [], CaseFailure(pair.case_id, str(faulty), str(exc))
    profiles = []
    if slice_positions and ref_geo.dim >= 3:  # a 2D image has no slice positions to break down
        profiles = case_slice_profiles(pair.case_id, ref, pred, spacing, labels, ignore, geometry=ref_geo)
    elif slice_positions:  # said in the breakdown's cases_without_breakdown, not only in a hidden log line
        profiles = [no_slices_profile(pair.case_id, ref_geo.dim)]
    logger.debug("evaluated %s", pair.case_id)
    return rows, profiles, None


def case_slice_profiles(case_id: str, reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                        labels: Mapping[str, int], ignore: Sequence[int] = (), *,
                        geometry: Geometry | None = None) -> list[SliceProfile]:
    """Per-slice volumes (:func:`autocmr.evaluation.slice_position.slice_profile`) of a 3D case or each frame of
    a 4D one; arrays already checked by :func:`evaluate_arrays`."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if len(ignore):
        prediction = np.where(np.isin(prediction, list(ignore)), 0, prediction)
    if reference.ndim == len(spacing):
        return [slice_profile(case_id, reference, prediction, spacing, labels, geometry=geometry)]
    return [slice_profile(frame_case_id(case_id, t), reference[t], prediction[t], spacing, labels, geometry=geometry,
                          source_case=case_id, frame=t) for t in annotated_frames(reference)]



def safe_name(text: str) -> str:
    """A file-name-safe version of a column name (for per-breakdown plots)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", str(text)).strip("_") or "column"


__all__ = ["CaseFailure", "CasePair", "case_info", "case_slice_profiles", "evaluate_arrays",
           "evaluate_pair", "evaluate_pair_detailed", "load_metadata", "match_files", "resolve_labels",
           "scored_labels"]
