"""Convert the M&Ms challenge data (Campello et al., IEEE TMI 2021) into an autocmr raw dataset.

Source layout: one folder per subject, possibly nested under ``Training/Labeled``, ``Training/Unlabeled``,
``Validation`` and ``Testing``::

    CODE/CODE_sa.nii.gz      4D short-axis cine, numpy (t, z, y, x)
    CODE/CODE_sa_gt.nii.gz   4D labels, annotated on the ED and ES frames only (1 LV, 2 MYO, 3 RV)

plus the "M&Ms dataset information" CSV (e.g. ``211230_M&Ms_Dataset_information_diagnosis_opendataset.csv``)
with the columns ``External code``, ``VendorName``, ``Vendor`` (letter A-D), ``Centre``, ``ED`` and ``ES``
(0-based frame indices) and, in later versions, ``Pathology``, ``Sex``, ``Age``, ``Height``, ``Weight``.
Column names are matched case-insensitively, ignoring spaces, ``_`` and ``-``.

The ED and ES frames of each subject become the 3D cases ``CODE_ED`` and ``CODE_ES`` in the spatial part of
the 4D geometry. Subjects without a ``_sa_gt`` file go to ``imagesTs``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from autocmr.dataset.converters.common import (ConversionProblem, check_values, convert_staged, finish_dataset,
                                               problems_of, raise_problems, resolve_workers, run_cases)
from autocmr.dataset.labels import AUTOCMR_LABELS, MNMS_TO_AUTOCMR, label_values, remap_labels
from autocmr.dataset.naming import make_dataset_name
from autocmr.dataset.raw import DatasetJson
from autocmr.errors import AutocmrError, DatasetError, InputFileError, no_folder
from autocmr.io.image import read_image, write_image

logger = logging.getLogger(__name__)

MNMS_CITATION = ("Campello et al., Multi-Centre, Multi-Vendor and Multi-Disease Cardiac Segmentation: "
                 "The M&Ms Challenge, IEEE TMI 2021")
IMAGE_SUFFIX, LABEL_SUFFIX = "_sa.nii.gz", "_sa_gt.nii.gz"
PHASES = ("ED", "ES")
# Accepted spellings of each needed column, after lower-casing and dropping spaces, '_' and '-'.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("externalcode", "subjectcode", "code", "subject", "subjectid", "externalid"),
    "vendor": ("vendorname",),  # the vendor's name, as the other converters store it
    "vendor_code": ("vendor", "vendorletter", "vendorcode"),  # M&Ms letter A-D
    "centre": ("centre", "center", "centreid", "centerid"),
    "ED": ("ed", "edframe", "enddiastole"),
    "ES": ("es", "esframe", "endsystole"),
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "pathology": ("pathology", "disease", "diagnosis"),
    "sex": ("sex", "gender"),
    "age": ("age",),
    "height": ("height",),
    "weight": ("weight",),
}


@dataclass(frozen=True)
class _Subject:
    code: str
    image: Path
    label: Path | None
    frames: dict[str, int]  # phase -> 0-based frame index
    meta: dict[str, Any]


def read_mnms_info(info_csv: str | Path) -> pd.DataFrame:
    """The information CSV with columns renamed to ``subject, vendor, vendor_code, centre, ED, ES`` (+ optional).

    Raises DatasetError listing the columns found when a needed one is missing.
    """
    info_csv = Path(info_csv)
    if not info_csv.is_file():
        raise DatasetError(f"{info_csv}: M&Ms information CSV not found")
    try:
        table = pd.read_csv(info_csv, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{info_csv}: cannot read as CSV ({exc})") from exc
    by_key = {re.sub(r"[\s_\-]", "", str(c).lower()): c for c in table.columns}
    rename: dict[str, str] = {}
    missing = []
    for wanted, spellings in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        column = next((by_key[s] for s in spellings if s in by_key), None)
        if column is not None:
            rename[column] = wanted
        elif wanted in REQUIRED_COLUMNS:
            missing.append(f"{wanted} (e.g. {spellings[0]!r})")
    if missing:
        raise DatasetError(f"{info_csv}: missing column(s) {', '.join(missing)}; columns found: "
                           f"{[str(c) for c in table.columns]}")
    table = table[list(rename)].rename(columns=rename)
    table["subject"] = table["subject"].str.strip()
    return table.dropna(subset=["subject"]).drop_duplicates()


def convert_mnms(source: str | Path, info_csv: str | Path, raw_root: str | Path | None, dataset_id: int = 114, *,
                 short_name: str = "MnMs", num_workers: int | None = None, overwrite: bool = False) -> Path:
    """Convert the M&Ms subjects under ``source`` into ``raw_root/DatasetNNN_<short_name>``; returns it.

    Args:
        source: the M&Ms folder (subject folders anywhere below it).
        info_csv: the M&Ms dataset information CSV (subject code, vendor, centre, 0-based ED/ES frames).
        raw_root: the raw root (``None``: flag > $AUTOCMR_RAW > default).
        dataset_id, short_name: name the dataset ``DatasetNNN_<short_name>``.
        num_workers: worker processes (``None``: all cores).
        overwrite: replace an existing dataset folder (only after the new conversion succeeded).

    All problems (subject missing from the CSV, bad frame index, unreadable file, unexpected label values,
    empty annotated frame) are raised together in one :class:`DatasetError`; then nothing is written.
    """
    source = Path(source)
    name = make_dataset_name(dataset_id, short_name)
    subjects, problems = scan_mnms(source, read_mnms_info(info_csv), Path(info_csv))
    n_train = 2 * sum(s.label is not None for s in subjects)

    def build(staging_root: Path) -> Path:
        folder = staging_root / name
        jobs = [(str(s.image), (s.image, s.label, s.frames, folder, s.code)) for s in subjects]
        found = problems + run_cases(_convert_subject, jobs, num_workers=resolve_workers(num_workers),
                                     desc="M&Ms")
        raise_problems(f"M&Ms conversion of {source}", found, staging_root.parent / name)
        rows = [{"case_id": f"{s.code}_{phase}", "subject": s.code, "phase": phase, "frame": frame, **s.meta}
                for s in subjects for phase, frame in s.frames.items()]
        dj = DatasetJson({"0": "cineMRI"}, dict(AUTOCMR_LABELS), n_train, ".nii.gz", short_name,
                         f"M&Ms short-axis cine, ED and ES frames (1 LV, 2 MYO, 3 RV). {MNMS_CITATION}")
        finish_dataset(folder, dj, rows)
        return folder

    folder = convert_staged(raw_root, name, build, overwrite=overwrite, sources=[source])
    logger.info("M&Ms: %d training cases, %d test images -> %s", n_train, 2 * len(subjects) - n_train, folder)
    return folder


def scan_mnms(source: Path, info: pd.DataFrame, info_path: Path) -> tuple[list[_Subject], list[ConversionProblem]]:
    """The subjects found under ``source`` with their frames and metadata, and the problems found."""
    if not source.is_dir():
        raise DatasetError(f"{source}: M&Ms source folder {no_folder(source)}")
    images: dict[str, list[Path]] = {}
    for path in sorted(source.rglob(f"*{IMAGE_SUFFIX}")):
        if not path.name.startswith("."):
            images.setdefault(path.name[: -len(IMAGE_SUFFIX)], []).append(path)
    if not images:
        raise DatasetError(f"{source}: no CODE{IMAGE_SUFFIX} files found (expected the M&Ms layout)")
    rows = {str(r["subject"]): r for r in info.to_dict("records")}
    problems: list[ConversionProblem] = []
    subjects: list[_Subject] = []
    for code, paths in sorted(images.items()):
        if len(paths) > 1:
            problems.append(ConversionProblem(paths[1], f"subject {code} found twice (also {paths[0]})"))
            continue
        image = paths[0]
        label = image.with_name(f"{code}{LABEL_SUFFIX}")
        label = label if label.is_file() else None
        if code not in rows:
            problems.append(ConversionProblem(image, f"subject {code} is not in {info_path.name}"))
            continue
        row = rows[code]
        try:
            frames = {phase: int(float(row[phase])) for phase in PHASES}
        except (TypeError, ValueError):
            if label is not None:
                problems.append(ConversionProblem(info_path, f"subject {code}: ED/ES frame indices "
                                                             f"{row['ED']!r}/{row['ES']!r} are not integers"))
            else:
                logger.warning("%s: unlabelled subject without ED/ES frames in %s, skipped", code, info_path.name)
            continue
        meta = {k: v for k, v in row.items() if k not in ("subject", "ED", "ES") and not pd.isna(v)}
        subjects.append(_Subject(code, image, label, frames, meta))
    unused = sorted(set(rows) - set(images))
    if unused:
        logger.info("%d subjects of %s are not under %s (e.g. %s)", len(unused), info_path.name, source, unused[:3])
    return subjects, problems


def _convert_subject(image: Path, label: Path | None, frames: dict[str, int], folder: Path,
                     code: str) -> list[ConversionProblem]:
    """Worker: write the ED and ES frames of one subject as 3D cases; returns the problems."""
    split = "Tr" if label is not None else "Ts"
    try:
        cine, geometry = read_image(image)
        _check_frames(image, cine.shape, frames)
        spatial = geometry.spatial()
        if label is not None:
            gt, gt_geometry = read_image(label)
            _check_frames(label, gt.shape, frames)
            check_values(label_values(gt, label), MNMS_TO_AUTOCMR, label)
    except (AutocmrError, ValueError) as exc:
        return [problems_of(exc, image)]
    problems = []
    for phase, t in frames.items():
        case_id = f"{code}_{phase}"
        write_image(cine[t], spatial, folder / f"images{split}" / f"{case_id}_0000.nii.gz")
        if label is None:
            continue
        frame = remap_labels(gt[t], MNMS_TO_AUTOCMR, source=str(label))
        if not frame.any():
            problems.append(ConversionProblem(label, f"{phase} frame {t} has no annotation; check the 0-based "
                                                     "ED/ES indices in the information CSV"))
        write_image(frame, gt_geometry.spatial(), folder / "labelsTr" / f"{case_id}.nii.gz")
    return problems


def _check_frames(path: Path, shape: tuple[int, ...], frames: dict[str, int]) -> None:
    if len(shape) != 4:
        raise InputFileError(path, f"expected a 4D cine (t, z, y, x), got shape {shape}")
    bad = {phase: t for phase, t in frames.items() if not 0 <= t < shape[0]}
    if bad:
        raise InputFileError(path, f"frame indices {bad} outside the {shape[0]} frames (0-based)")


__all__ = ["MNMS_CITATION", "convert_mnms", "read_mnms_info", "scan_mnms"]
