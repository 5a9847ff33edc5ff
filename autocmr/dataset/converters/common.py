"""Shared machinery of the dataset converters: staged output, file transfer, parallel cases, problem reports.

Overwrite policy (all converters): a dataset is built in a hidden staging folder beside its final place
(``RAW/.autocmr_staging_XXXX/DatasetNNN_Name``) and moved into place only once every case converted. An
existing, non-empty dataset folder is refused up front unless ``overwrite=True``; with it, the old folder
is replaced only after the new conversion succeeded, so a failed run never leaves a half-written or
half-deleted dataset behind.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from autocmr.dataset.labels import label_values, remap_labels
from autocmr.dataset.raw import DATASET_JSON, DatasetJson, write_cases_csv
from autocmr.errors import DatasetError, InputFileError
from autocmr.io.atomic import write_json_atomic
from autocmr.io.image import read_header, read_image, write_image
from autocmr.parallel import default_workers, make_bare_pool, run_all
from autocmr.settings import resolve_roots

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".autocmr_staging_"
ABANDONED_STAGING_S = 86400.0  # a staging folder untouched this long belongs to no running conversion
NIFTI_GZ, NIFTI = ".nii.gz", ".nii"
# gzip level for .nii inputs re-packed as .nii.gz: level 1 is several times faster than the default 6 and
# costs only a few percent in size on MR images; the bytes inside stay identical.
GZIP_LEVEL = 1
# Below this many cases, starting worker processes (about a second each with ``spawn``) costs more than
# it saves.
MIN_CASES_FOR_POOL = 4
# At most this many problems are spelled out in an error message; the count says how many there were.
MAX_LISTED_PROBLEMS = 50
# What a converter skipped (partial-skip policy, see settle_problems), written into the dataset folder.
SKIPPED_JSON = "conversion_skipped.json"


@dataclass(frozen=True)
class ConversionProblem:
    """One thing wrong with one source file (picklable: returned from worker processes)."""

    file: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def resolve_raw_root(raw_root: str | Path | None) -> Path:
    """``raw_root`` as an absolute path; ``None`` means the configured raw root (flag > env > default)."""
    return resolve_roots(raw=raw_root).raw


def resolve_workers(num_workers: int | None) -> int:
    """``None`` means all cores available to this process."""
    return default_workers() if num_workers is None else max(1, int(num_workers))


def raise_problems(what: str, problems: Sequence[ConversionProblem | str], target: Path) -> None:
    """Raise one :class:`DatasetError` listing every problem (no-op when there are none)."""
    if not problems:
        return
    lines = [str(p) for p in problems]
    shown = lines[:MAX_LISTED_PROBLEMS]
    more = len(lines) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    raise DatasetError(f"{what}: {len(lines)} problem(s), nothing was written to {target}:\n  "
                       + "\n  ".join(shown) + tail)


def settle_problems(what: str, problems: Sequence[ConversionProblem], folder: Path, *, converted: int,
                    strict: bool) -> None:
    """Partial-skip policy of the ACDC and Sunnybrook converters: the bad parts of a study are skipped.

    With ``strict`` any problem fails the whole conversion (nothing is written). Otherwise the problems are
    logged as one warning listing them and written to ``folder/conversion_skipped.json``, and the cases that
    converted are kept; a conversion in which no case converted still fails.
    """
    if not problems:
        return
    if strict or converted == 0:
        target = folder.parent.parent / folder.name  # folder is STAGING/Name; the dataset goes to RAW/Name
        raise_problems(what + ("" if strict else ": no case could be converted"), problems, target)
    lines = [str(p) for p in problems]
    logger.warning("%s: %d source file(s) skipped, %d case(s) converted:\n  %s", what, len(lines), converted,
                   "\n  ".join(lines[:MAX_LISTED_PROBLEMS]))
    write_json_atomic(folder / SKIPPED_JSON, {"converted_cases": converted, "skipped": [
        {"file": str(p.file), "reason": p.reason} for p in problems]})


def convert_staged(raw_root: str | Path | None, dataset_name: str, build: Callable[[Path], Path], *,
                   overwrite: bool = False, sources: Iterable[str | Path] = ()) -> Path:
    """Run ``build(staging_raw_root) -> dataset_folder`` and move its result to ``raw_root/dataset_name``.

    Any converter that takes a raw root can be wrapped this way (see the overwrite policy above).
    ``sources`` are the input paths: a source inside the dataset being replaced is refused, because
    replacing the dataset would delete it.
    """
    raw_root = resolve_raw_root(raw_root)
    target = raw_root / dataset_name
    _refuse_existing(target, overwrite)
    _refuse_taken_id(raw_root, dataset_name)
    for source in sources:
        source = Path(source).resolve()
        if source == target or target in source.parents:
            raise DatasetError(f"{source}: the source lies inside the dataset folder {target} that the "
                               "conversion would replace; convert into another dataset id or name")
    raw_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(raw_root)
    staging_root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=raw_root))
    try:
        built = Path(build(staging_root))
        if built != staging_root / dataset_name or not (built / DATASET_JSON).is_file():
            raise DatasetError(f"converter output {built} is not the dataset folder "
                               f"{staging_root / dataset_name} with a {DATASET_JSON}")
        _install(built, target, overwrite, staging_root)
        return target
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


def _remove_abandoned_staging(raw_root: Path) -> None:
    """Staging copies a killed conversion left (gigabytes for M&Ms): removed once untouched for a day, so a
    conversion running now beside this one keeps its own."""
    now = time.time()
    for folder in raw_root.glob(f"{STAGING_PREFIX}*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > ABANDONED_STAGING_S:
                shutil.rmtree(folder, ignore_errors=True)
                logger.info("removed %s, left by an interrupted conversion", folder)
        except OSError:
            continue


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise DatasetError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DatasetError(f"{target}: dataset folder already exists; give --overwrite (Python: overwrite=True) "
                           "to replace it once the new conversion has succeeded")


def _refuse_taken_id(raw_root: Path, dataset_name: str) -> None:
    """Another dataset with the same id: every ``-d NNN`` after this would be ambiguous (--overwrite replaces
    a dataset of the same name only)."""
    prefix = dataset_name.split("_", 1)[0] + "_"
    others = sorted(p.name for p in raw_root.glob(f"{prefix}*") if p.is_dir() and p.name != dataset_name) \
        if raw_root.is_dir() else []
    if others:
        number = int(prefix[len("Dataset"):-1])
        raise DatasetError(f"{raw_root / others[0]}: id {number} is taken by {', '.join(others)}; converting to "
                           f"{dataset_name} would make `-d {number}` ambiguous. Choose another id (-d), or the same "
                           f"name with --overwrite to replace it")


def _install(built: Path, target: Path, overwrite: bool, staging_root: Path) -> None:
    """Move ``built`` to ``target``; an existing target is set aside first and deleted afterwards."""
    _refuse_existing(target, overwrite)  # again: another process may have written it meanwhile
    previous = staging_root / "previous"
    if target.exists():
        os.rename(target, previous)
    try:
        os.rename(built, target)
    except OSError:
        if previous.exists():
            os.rename(previous, target)
        raise
    logger.info("dataset written to %s", target)


def output_ending(file_name: str) -> str:
    """File ending used in the raw dataset for a source file: NIfTI becomes ``.nii.gz``, others stay."""
    if file_name.endswith(NIFTI_GZ) or file_name.endswith(NIFTI):
        return NIFTI_GZ
    suffix = Path(file_name).suffix
    if not suffix:
        raise DatasetError(f"{file_name}: cannot tell the image format (no file extension)")
    return suffix


def copy_image_file(src: Path, dst: Path) -> None:
    """Copy an image keeping its bytes (and so its exact header); ``.nii`` is gzipped to ``.nii.gz``.

    Only the header is read, to fail early on files that are not images; pixel data is checked by
    :func:`autocmr.dataset.integrity.check_dataset`.
    """
    read_header(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.name.endswith(NIFTI) and dst.name.endswith(NIFTI_GZ):
        with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=GZIP_LEVEL) as fout:
            shutil.copyfileobj(fin, fout)
    elif output_ending(src.name) == output_ending(dst.name):
        shutil.copyfile(src, dst)
    else:
        array, geometry = read_image(src)
        write_image(array, geometry, dst)


def check_values(values: Sequence[int], mapping: dict[int, int], path: Path) -> None:
    unknown = sorted(set(values) - set(mapping))
    if unknown:
        raise InputFileError(path, f"label values {unknown} are not among the expected values {sorted(mapping)}")


def transfer_label(src: Path, dst: Path, mapping: dict[int, int]) -> None:
    """Copy a label file byte-for-byte when ``mapping`` leaves its values unchanged, else re-write it.

    Raises InputFileError for unreadable files, non-integer values or values not in ``mapping``.
    """
    array, geometry = read_image(src)
    values = label_values(array, src)
    check_values(values, mapping, src)
    if all(mapping[v] == v for v in values) and output_ending(src.name) == output_ending(dst.name):
        copy_image_file(src, dst)
        return
    remapped = remap_labels(array, mapping, source=str(src))
    write_image(remapped.astype(np.uint8, copy=False), geometry, dst)


def run_cases(fn: Callable[..., list[ConversionProblem]], jobs: list[tuple[str, tuple[Any, ...]]], *,
              num_workers: int, desc: str) -> list[ConversionProblem]:
    """Run ``fn(*args)`` per case (in a process pool when worthwhile) and gather all problems.

    ``fn`` returns the problems of its case; an unexpected exception becomes a problem of that case too.
    """
    workers = min(num_workers, len(jobs))
    if workers <= 1 or len(jobs) < MIN_CASES_FOR_POOL:
        results, failures = run_all(fn, jobs, num_workers=1, desc=desc)
    else:
        # No torch here: a bare spawn pool starts much faster than autocmr.parallel.make_pool's workers.
        with make_bare_pool(workers) as pool:
            results, failures = run_all(fn, jobs, num_workers=workers, desc=desc, pool=pool)
    problems = [p for key, _ in jobs for p in results.get(key, [])]
    # Every failed case is a problem of its own, even when a crashed pool failed them all with one message:
    # the converters drop the cases their problems name, and a case left out of the list would be kept as
    # converted without its files. The log and the error message cap how many they list.
    problems += [ConversionProblem(Path(key), f"conversion failed ({failures[key]})") for key in sorted(failures)]
    return problems


def problems_of(exc: Exception, fallback: Path) -> ConversionProblem:
    """A problem from an expected per-case exception (the file it names, or ``fallback``)."""
    if isinstance(exc, InputFileError):
        return ConversionProblem(exc.path, exc.reason)
    return ConversionProblem(fallback, str(exc))


def finish_dataset(folder: Path, dataset_json: DatasetJson, rows: list[dict[str, Any]]) -> None:
    """Write dataset.json and (when there are rows) cases.csv."""
    dataset_json.save(folder / DATASET_JSON)
    if rows:
        write_cases_csv(folder, rows)


def summarize_dataset(folder: str | Path) -> str:
    """One line: training cases, test images, label names (for CLI output and logs)."""
    folder = Path(folder)
    dj = DatasetJson.load(folder / DATASET_JSON)
    test_dir = folder / "imagesTs"
    n_test = len([f for f in test_dir.iterdir() if f.name.endswith(dj.file_ending)]) if test_dir.is_dir() else 0
    labels = ", ".join(f"{v} {k}" for k, v in sorted(dj.labels.items(), key=lambda kv: kv[1]) if v)
    skipped = ""
    if (folder / SKIPPED_JSON).is_file():
        count = len(json.loads((folder / SKIPPED_JSON).read_text(encoding="utf-8")).get("skipped", []))
        skipped = f"; {count} source file(s) skipped, see {SKIPPED_JSON}"
    return (f"{folder.name}: {dj.num_training} training cases, {n_test // max(1, dj.num_channels)} test "
            f"images, {dj.num_channels} channel(s), labels {labels}{skipped}")


__all__ = ["ConversionProblem", "SKIPPED_JSON", "STAGING_PREFIX", "settle_problems", "convert_staged",
           "copy_image_file", "raise_problems", "resolve_raw_root", "resolve_workers", "summarize_dataset",
           "transfer_label"]
