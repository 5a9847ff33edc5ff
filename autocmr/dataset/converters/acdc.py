"""Convert the ACDC challenge release (Bernard et al., IEEE TMI 2018) into an autocmr raw dataset.

Source layout (official release)::

    SOURCE/patientNNN/Info.cfg                     ED, ES (frame numbers), Group, Height, Weight, NbFrame
    SOURCE/patientNNN/patientNNN_frameXX.nii.gz    one 3D frame (ED or ES)
    SOURCE/patientNNN/patientNNN_frameXX_gt.nii.gz its manual labels (training patients only)
    SOURCE/patientNNN/patientNNN_4d.nii.gz         whole cine, optional, ignored

``SOURCE`` may also be the release's top folder holding ``training/`` and ``testing/``. Each frame becomes
one case ``patientNNN_frameXX``. Images are copied byte-for-byte; labels are re-written from ACDC's
convention (1 RV, 2 MYO, 3 LV) to autocmr's (1 LV, 2 MYO, 3 RV). The split follows the patient's folder:
patients under a folder named ``testing`` go to ``imagesTs`` even when they have ``_gt`` files (the later
releases ship the test set's ground truth; training on it would leak the test set into training), and their
``_gt`` files are not used (the raw format has no test labels). In a folder named otherwise, patients
without any ground truth go to ``imagesTs``; under ``training``, a missing ground truth is a problem.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocmr.dataset.converters.common import (ConversionProblem, convert_staged, copy_image_file, finish_dataset,
                                               problems_of, resolve_workers, run_cases, settle_problems,
                                               transfer_label)
from autocmr.dataset.labels import ACDC_TO_AUTOCMR, AUTOCMR_LABELS
from autocmr.dataset.naming import make_dataset_name
from autocmr.dataset.raw import DatasetJson
from autocmr.errors import AutocmrError, DatasetError, no_folder

logger = logging.getLogger(__name__)

# Acquisition facts of ACDC (Bernard et al. 2018): Siemens Aera 1.5 T and Trio Tim 3 T scanners at the
# University Hospital of Dijon, France.
ACDC_VENDOR, ACDC_CENTRE = "Siemens", "Dijon"
ACDC_CITATION = ("Bernard et al., Deep Learning Techniques for Automatic MRI Cardiac Multi-structures "
                 "Segmentation and Diagnosis: Is the Problem Solved? IEEE TMI 2018")
_FRAME_FILE = re.compile(r"^(patient\d+)_frame(\d+)(_gt)?(\.nii\.gz|\.nii)$")
_PATIENT_DIR = re.compile(r"^patient\d+$")
INFO_FILE = "Info.cfg"
TRAINING_DIR, TESTING_DIR = "training", "testing"  # the release's split folders


@dataclass(frozen=True)
class _Frame:
    case_id: str
    image: Path
    label: Path | None
    row: dict[str, Any]


def read_info_cfg(path: str | Path) -> dict[str, str]:
    """The ``key: value`` lines of an ACDC ``Info.cfg``."""
    path = Path(path)
    info: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def convert_acdc(source: str | Path, raw_root: str | Path | None, dataset_id: int = 101, *,
                 short_name: str = "ACDC", num_workers: int | None = None, overwrite: bool = False,
                 strict: bool = False) -> Path:
    """Convert the ACDC patients under ``source`` into ``raw_root/DatasetNNN_<short_name>``; returns it.

    Args:
        source: folder of ``patientNNN`` folders (or holding ``training/`` and ``testing/``).
        raw_root: the raw root (``None``: flag > $AUTOCMR_RAW > default).
        dataset_id: nnU-Net style dataset id.
        short_name: the name part of ``DatasetNNN_Name``.
        num_workers: worker processes (``None``: all cores).
        overwrite: replace an existing dataset folder (only after the new conversion succeeded).
        strict: any problem fails the whole conversion and nothing is written.

    Every problem (unreadable file, missing label or frame, unexpected label values) is collected. By default
    the frames at fault are skipped, listed in one warning and in ``conversion_skipped.json``, and the rest
    is converted (a patient whose ED frame is missing keeps its ES case); with ``strict``, or when nothing
    converted, all problems are raised together in one :class:`DatasetError` and nothing is written.
    """
    source = Path(source)
    name = make_dataset_name(dataset_id, short_name)
    frames, problems = scan_acdc(source)
    if not any(f.label is not None for f in frames) and not problems:
        raise DatasetError(f"{source}: no frame with ground truth (patientNNN_frameXX_gt.nii.gz) found (the "
                           f"ground truth of patients under a '{TESTING_DIR}' folder is not used)")
    converted: list[_Frame] = []

    def build(staging_root: Path) -> Path:
        folder = staging_root / name
        jobs = [(str(f.image), (f.image, f.label, folder, f.case_id)) for f in frames]
        found = run_cases(_convert_frame, jobs, num_workers=resolve_workers(num_workers), desc="ACDC")
        converted[:] = _drop_failed(frames, found, folder)
        settle_problems(f"ACDC conversion of {source}", problems + found, folder, converted=len(converted),
                        strict=strict)
        train = [f for f in converted if f.label is not None]
        dj = DatasetJson({"0": "cineMRI"}, dict(AUTOCMR_LABELS), len(train), ".nii.gz", short_name,
                         f"ACDC short-axis cine, ED and ES frames; labels remapped to autocmr's convention "
                         f"(1 LV, 2 MYO, 3 RV). {ACDC_CITATION}")
        finish_dataset(folder, dj, [f.row for f in converted])
        return folder

    folder = convert_staged(raw_root, name, build, overwrite=overwrite, sources=[source])
    n_train = sum(f.label is not None for f in converted)
    logger.info("ACDC: %d training cases, %d test images -> %s", n_train, len(converted) - n_train, folder)
    return folder


def _drop_failed(frames: list[_Frame], problems: list[ConversionProblem], folder: Path) -> list[_Frame]:
    """The frames that converted; what a failed frame wrote into the staging folder is removed."""
    bad = {str(p.file) for p in problems}
    kept = []
    for frame in frames:
        if str(frame.image) in bad or (frame.label is not None and str(frame.label) in bad):
            for part in ("imagesTr", "imagesTs"):
                (folder / part / f"{frame.case_id}_0000.nii.gz").unlink(missing_ok=True)
            (folder / "labelsTr" / f"{frame.case_id}.nii.gz").unlink(missing_ok=True)
        else:
            kept.append(frame)
    return kept


def scan_acdc(source: Path) -> tuple[list[_Frame], list[ConversionProblem]]:
    """All frames of all patients under ``source`` with their metadata, and the problems found."""
    if not source.is_dir():
        raise DatasetError(f"{source}: ACDC source folder {no_folder(source)}")
    patient_dirs = _patient_dirs(source)
    if not patient_dirs:
        raise DatasetError(f"{source}: no patientNNN folders found (expected the official ACDC layout, "
                           "patientNNN/Info.cfg and patientNNN_frameXX[_gt].nii.gz)")
    held_out = [p.name for p in patient_dirs if _is_testing(p) and any(p.glob("*_gt.nii*"))]
    if held_out:
        logger.info("ACDC: %d patient(s) under %s/ (%s ...) go to imagesTs; their _gt files are not used for "
                    "training", len(held_out), TESTING_DIR, ", ".join(held_out[:3]))
    frames: list[_Frame] = []
    problems: list[ConversionProblem] = []
    for patient_dir in patient_dirs:
        try:
            found, found_problems = _scan_patient(patient_dir)
        except _PatientProblems as exc:  # nothing usable (no Info.cfg)
            problems += exc.problems
            continue
        frames += found
        problems += found_problems
    return frames, problems


def _patient_dirs(source: Path) -> list[Path]:
    found = sorted(p for p in source.iterdir() if p.is_dir() and _PATIENT_DIR.match(p.name))
    if not found:  # the release's top folder
        found = sorted(p for split in (TRAINING_DIR, TESTING_DIR) if (source / split).is_dir()
                       for p in (source / split).iterdir() if p.is_dir() and _PATIENT_DIR.match(p.name))
    return found


def _is_testing(patient_dir: Path) -> bool:
    """A patient of the release's test set, by its folder (whether or not it ships ground truth)."""
    return patient_dir.parent.name.lower() == TESTING_DIR


class _PatientProblems(Exception):
    def __init__(self, problems: list[ConversionProblem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def _scan_patient(patient_dir: Path) -> tuple[list[_Frame], list[ConversionProblem]]:
    """The patient's usable frames, and the problems of the others (missing image, label or frame)."""
    info = _patient_info(patient_dir)
    images: dict[int, Path] = {}
    labels: dict[int, Path] = {}
    for f in patient_dir.iterdir():
        match = _FRAME_FILE.match(f.name)
        if match and match.group(1) == patient_dir.name:
            (labels if match.group(3) else images)[int(match.group(2))] = f
    if _is_testing(patient_dir):
        labels = {}  # a test patient's ground truth must not become training data (logged in scan_acdc)
    problems = [ConversionProblem(path, "label without its image "
                                        f"{patient_dir.name}_frame{number:02d}.nii.gz")
                for number, path in sorted(labels.items()) if number not in images]
    for key in ("ED", "ES"):
        if info[key] not in images:
            problems.append(ConversionProblem(patient_dir / INFO_FILE, f"{key} is frame {info[key]} but no image "
                                              f"{patient_dir.name}_frame{info[key]:02d}.nii.gz was found"))
    # a patient of the testing layout: no ground truth (used); under training/ that is missing ground truth
    is_test = not labels and patient_dir.parent.name.lower() != TRAINING_DIR
    frames = []
    for number, image in sorted(images.items()):
        label = labels.get(number)
        if label is None and not is_test:
            problems.append(ConversionProblem(image, "no ground truth file "
                                                     f"{image.name.split('.')[0]}_gt.nii.gz beside it"))
            continue
        case_id = image.name.split(".")[0]
        phase = "ED" if number == info["ED"] else "ES" if number == info["ES"] else ""
        row = {"case_id": case_id, "subject": patient_dir.name, "phase": phase, "frame": number,
               "group": info["Group"], "height": info["Height"], "weight": info["Weight"],
               "n_frames": info["NbFrame"], "vendor": ACDC_VENDOR, "centre": ACDC_CENTRE}
        frames.append(_Frame(case_id, image, label, row))
    return frames, problems


def _patient_info(patient_dir: Path) -> dict[str, Any]:
    path = patient_dir / INFO_FILE
    if not path.is_file():
        raise _PatientProblems([ConversionProblem(path, "Info.cfg not found (needed for the ED and ES frames)")])
    raw = read_info_cfg(path)
    info: dict[str, Any] = {"Group": raw.get("Group", "")}
    try:
        info["ED"], info["ES"] = int(raw["ED"]), int(raw["ES"])
        for key in ("Height", "Weight"):
            info[key] = float(raw[key]) if raw.get(key) else None
        info["NbFrame"] = int(raw["NbFrame"]) if raw.get("NbFrame") else None
    except (KeyError, ValueError) as exc:
        raise _PatientProblems([ConversionProblem(path, f"cannot read ED/ES/Height/Weight/NbFrame ({exc!r}); "
                                                        f"found {raw}")]) from exc
    return info


def _convert_frame(image: Path, label: Path | None, folder: Path, case_id: str) -> list[ConversionProblem]:
    """Worker: copy one frame's image, remap its label; returns the problems (empty on success)."""
    problems = []
    split = "Tr" if label is not None else "Ts"
    try:
        copy_image_file(image, folder / f"images{split}" / f"{case_id}_0000.nii.gz")
    except AutocmrError as exc:
        problems.append(problems_of(exc, image))
    if label is not None:
        try:
            transfer_label(label, folder / "labelsTr" / f"{case_id}.nii.gz", ACDC_TO_AUTOCMR)
        except AutocmrError as exc:
            problems.append(problems_of(exc, label))
    return problems


__all__ = ["ACDC_CENTRE", "ACDC_VENDOR", "convert_acdc", "read_info_cfg", "scan_acdc"]
