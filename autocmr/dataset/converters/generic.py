"""Convert a plain folder of image/label pairs (one channel per case) into an autocmr raw dataset.

Pairs are matched by name: an image ``NAME<ending>`` (or ``NAME_0000<ending>``) pairs with the label
``NAME<ending>`` or ``NAME_gt``/``NAME_seg``/``NAME_label``/``NAME_labels`` ``<ending>`` in the labels folder
(which may be the images folder itself). Every unmatched or ambiguous file is reported, all at once.
Images are copied byte-for-byte; labels too, unless a label map changes their values.
"""
from __future__ import annotations

import json
import os
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from autocmr.dataset.converters.common import (ConversionProblem, convert_staged, copy_image_file, finish_dataset,
                                               output_ending, problems_of, raise_problems, resolve_workers,
                                               run_cases, transfer_label)
from autocmr.dataset.labels import AUTOCMR_LABELS
from autocmr.dataset.naming import make_dataset_name
from autocmr.dataset.raw import DatasetJson
from autocmr.errors import AutocmrError, ConfigurationError, DatasetError, no_folder
from autocmr.io.image import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

LABEL_SUFFIXES = ("_gt", "_seg", "_label", "_labels", "_mask", "_manual")  # as autocmr_predict skips them
CHANNEL_SUFFIX = "_0000"  # nnU-Net's channel suffix; only single-channel folders are converted


def parse_label_map(label_map: Mapping[Any, Any] | str | Path | None) -> dict[int, int]:
    """``{"1": 3, "3": 1}`` (a mapping, a JSON string or a JSON file) as ``{1: 3, 3: 1}``."""
    if label_map is None:
        return {}
    if isinstance(label_map, str) and label_map.lstrip().startswith("{"):
        pass  # JSON text (a long map is no file name: asking the file system would fail)
    elif isinstance(label_map, Path) or (isinstance(label_map, str) and Path(label_map).is_file()):
        try:
            label_map = Path(label_map).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"label map file {label_map}: cannot read it ({exc})") from exc
    if isinstance(label_map, str):
        try:
            label_map = json.loads(label_map)
        except json.JSONDecodeError as exc:
            if label_map.strip().lower().endswith(".json") or os.sep in label_map:  # meant as a file name
                raise ConfigurationError(f"label map file {label_map} not found") from exc
            raise ConfigurationError(f"label map {label_map!r} is not valid JSON ({exc})") from exc
    if not isinstance(label_map, Mapping):
        raise ConfigurationError(f"label map must map source values to target values, got {label_map!r}")
    try:
        return {int(k): int(v) for k, v in label_map.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"label map {dict(label_map)} must map integers to integers") from exc


def label_mapping(labels: Mapping[str, int], label_map: Mapping[int, int]) -> dict[int, int]:
    """Source value -> target value: the declared values map to themselves unless ``label_map`` says otherwise.

    An entry from a value that is not a declared label renumbers it (``{"4": 3}`` for a source numbered 0, 1, 2,
    4); an entry from a declared value that joins another declared value's class is refused as a one-sided swap.
    """
    targets = set(labels.values())
    bad = {k: v for k, v in label_map.items() if v not in targets or k < 0}
    if bad:
        raise ConfigurationError(f"label map entries {bad} map to values that are not declared labels "
                                 f"{dict(labels)} (or from negative values)")
    mapping = {**{v: v for v in targets}, **dict(label_map)}
    sources: dict[int, list[int]] = {}
    for source, target in mapping.items():
        sources.setdefault(target, []).append(source)
    # {"1": 3} alone keeps 3 -> 3 as well: meant as a swap, it merges two classes ({"4": 3}, from a value that
    # is no declared label, renumbers it)
    merged = {t: sorted(v) for t, v in sources.items()
              if any(k not in label_map for k in v) and any(k in label_map and k in targets for k in v)}
    if merged:
        target, both = next(iter(merged.items()))
        raise ConfigurationError(f"label map {dict(label_map)} sends {both} all to {target} (declared values keep "
                                 f"their own value unless the map says otherwise): to swap, map both ways (e.g. "
                                 f"{{\"{both[0]}\": {both[1]}, \"{both[1]}\": {both[0]}}}); to merge, list every "
                                 "value that is merged")
    return mapping


def _ending(path: Path) -> str:
    """The image file ending of ``path`` (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``), or "" for other files."""
    name = path.name.lower()
    return next((e for e in IMAGE_SUFFIXES if name.endswith(e)), "")


def match_pairs(images_dir: Path, labels_dir: Path, file_ending: str
                ) -> tuple[list[tuple[str, Path, Path]], list[ConversionProblem]]:
    """``(case_id, image, label)`` for every matched pair, and a problem for every unmatched file."""
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder {no_folder(folder)}")
    same = images_dir.resolve() == labels_dir.resolve()
    # In a shared folder only suffixed files are labels; every other file is an image.
    label_files = {f.name[: -len(file_ending)]: f for f in sorted(labels_dir.iterdir())
                   if f.name.endswith(file_ending) and not f.name.startswith(".")
                   and (not same or f.name[: -len(file_ending)].endswith(LABEL_SUFFIXES))}
    images: dict[str, Path] = {}
    problems: list[ConversionProblem] = []
    for folder in dict.fromkeys([images_dir, labels_dir]):  # another format beside the chosen one: said, not dropped
        problems += [ConversionProblem(f, f"ends in {_ending(f)}, not {file_ending}: not converted (convert every "
                                          f"file to one format, or give --file-ending {_ending(f)})")
                     for f in sorted(folder.iterdir()) if not f.name.startswith(".") and f.is_file()
                     and not f.name.endswith(file_ending) and _ending(f)]
    for f in sorted(images_dir.iterdir()):
        if not f.name.endswith(file_ending) or f.name.startswith("."):
            continue
        stem = f.name[: -len(file_ending)]
        if same and stem.endswith(LABEL_SUFFIXES):
            continue  # a label beside its image
        case_id = stem[: -len(CHANNEL_SUFFIX)] if stem.endswith(CHANNEL_SUFFIX) else stem
        if case_id in images:
            problems.append(ConversionProblem(f, f"same case id {case_id!r} as {images[case_id].name}"))
            continue
        images[case_id] = f
    if not images:
        endings = sorted({"".join(f.suffixes) for f in images_dir.iterdir() if f.is_file()})
        raise DatasetError(f"{images_dir}: no image ending in {file_ending} (file endings found: {endings})")
    pairs, used = [], set()
    for case_id, image in images.items():
        stem = image.name[: -len(file_ending)]
        names = [n for n in dict.fromkeys([case_id, stem] + [case_id + s for s in LABEL_SUFFIXES])
                 if n in label_files]
        if len(names) == 1:
            pairs.append((case_id, image, label_files[names[0]]))
            used.add(names[0])
        elif names:
            problems.append(ConversionProblem(image, f"several labels match: {[n + file_ending for n in names]}"))
            used.update(names)
        else:
            looked = ", ".join(case_id + s + file_ending for s in ("",) + LABEL_SUFFIXES)
            problems.append(ConversionProblem(image, f"no label found in {labels_dir} (looked for {looked})"))
    problems += [ConversionProblem(f, "label without a matching image")
                 for n, f in label_files.items() if n not in used]
    return pairs, problems


def _warn_if_acdc_labels(pairs: Sequence[tuple[str, Path, Path]], label_map: Any, file_ending: str) -> None:
    """ACDC's own label files (``patientNNN_frameNN_gt``) use 1 RV, 2 MYO, 3 LV: converted as they are, the
    dataset trains a model with LV and RV swapped, and nothing later can tell."""
    acdc = [label.name for _, _, label in pairs
            if re.fullmatch(r"patient\d+_frame\d+_gt" + re.escape(file_ending), label.name)]
    if acdc and not label_map:
        logger.warning("labels named like ACDC's (%s, ...) are read with autocmr's labels (1 LV, 2 MYO, 3 RV); "
                       "ACDC's own files use 1 RV, 2 MYO, 3 LV: convert them with autocmr_convert acdc, or give "
                       "--label-map '{\"1\": 3, \"3\": 1}'", acdc[0])


def convert_folder(images_dir: str | Path, labels_dir: str | Path, raw_root: str | Path | None, dataset_id: int, *,
                   short_name: str, label_map: Mapping[Any, Any] | str | None = None,
                   labels: Mapping[str, int] | None = None, file_ending: str = ".nii.gz",
                   metadata_csv: str | Path | None = None, channel_name: str = "cineMRI",
                   num_workers: int | None = None, overwrite: bool = False) -> Path:
    """Convert matched image/label pairs into ``raw_root/DatasetNNN_<short_name>``; returns the folder.

    Args:
        images_dir, labels_dir: the folders (may be the same folder).
        raw_root: the raw root (``None``: flag > $AUTOCMR_RAW > default).
        dataset_id, short_name: name the dataset ``DatasetNNN_<short_name>``.
        label_map: source label value -> target value, e.g. ``{"1": 3, "3": 1}``; unlisted declared values
            stay as they are, any other value is an error.
        labels: the dataset's label names and values (default autocmr's: background, LV, MYO, RV).
        file_ending: of the source files; NIfTI (``.nii``/``.nii.gz``) is stored as ``.nii.gz``.
        metadata_csv: optional per-case metadata with a ``case_id`` column (``subject``, ``phase``, ...).
        channel_name: the channel's name in dataset.json.
        num_workers: worker processes (``None``: all cores).
        overwrite: replace an existing dataset folder (only after the new conversion succeeded).
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    name = make_dataset_name(dataset_id, short_name)
    labels = dict(labels or AUTOCMR_LABELS)
    DatasetJson.from_dict({"channel_names": {"0": channel_name}, "labels": labels, "numTraining": 0,
                           "file_ending": file_ending}, source="labels")  # validates the label names/values
    mapping = label_mapping(labels, parse_label_map(label_map))
    pairs, problems = match_pairs(images_dir, labels_dir, file_ending)
    _warn_if_acdc_labels(pairs, label_map, file_ending)
    rows = _metadata_rows(metadata_csv, [c for c, _, _ in pairs])
    ending = output_ending(file_ending)

    def build(staging_root: Path) -> Path:
        folder = staging_root / name
        jobs = [(str(image), (image, label, folder, case_id, mapping, ending)) for case_id, image, label in pairs]
        found = problems + run_cases(_convert_pair, jobs, num_workers=resolve_workers(num_workers),
                                     desc=short_name)
        raise_problems(f"conversion of {images_dir}", found, staging_root.parent / name)
        dj = DatasetJson({"0": channel_name}, labels, len(pairs), ending, short_name,
                         f"converted from {images_dir} and {labels_dir}")
        finish_dataset(folder, dj, rows)
        return folder

    return convert_staged(raw_root, name, build, overwrite=overwrite, sources=[images_dir, labels_dir])


def _metadata_rows(metadata_csv: str | Path | None, case_ids: list[str]) -> list[dict[str, Any]]:
    if metadata_csv is None:
        return []
    path = Path(metadata_csv)
    try:
        table = pd.read_csv(path, dtype={"case_id": str, "subject": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read metadata CSV ({exc})") from exc
    if "case_id" not in table.columns:
        raise DatasetError(f"{path}: needs a 'case_id' column, found {list(table.columns)}")
    table["case_id"] = table["case_id"].str.strip()
    empty = table.index[table["case_id"].isna() | (table["case_id"] == "")]
    if len(empty):  # rows numbered as a spreadsheet shows them: the header is row 1
        raise DatasetError(f"{path}: row(s) {[int(i) + 2 for i in empty][:5]} have no case_id (the header is row 1)")
    known = set(case_ids)
    # a row keyed by the image's file name or its channel file (CASE_0000, CASE.nii.gz) names the same case
    written = table["case_id"].copy()
    table["case_id"] = [_case_of(c, known) for c in written]
    # after the mapping: P1_ED and P1_ED_0000.nii.gz are two rows for one case
    for case_id, rows in table.groupby("case_id", sort=True):
        if len(rows) > 1:
            raise DatasetError(f"{path}: rows {[int(i) + 2 for i in rows.index]} are all for case {case_id} "
                               f"(written {sorted(set(written[rows.index]))}); keep one row per case")
    unknown = sorted(set(table["case_id"]) - known)
    if unknown and len(unknown) == len(table):  # every row: the ids are written another way, not a few extras
        raise DatasetError(f"{path}: none of its case ids ({unknown[:3]} ...) is a case of this dataset (e.g. "
                           f"{sorted(known)[:3]}); write them as the case ids, without channel suffix or file ending")
    if unknown:
        logger.warning("%s: %d rows for cases not in the dataset, dropped (e.g. %s)", path, len(unknown), unknown[:3])
    without = sorted(known - set(table["case_id"]))
    if without:
        logger.warning("%s: %d case(s) have no row (subject = case id, no phase), e.g. %s", path, len(without),
                       without[:3])
    table = table[table["case_id"].isin(case_ids)]
    return [{k: v for k, v in row.items() if not pd.isna(v)} for row in table.to_dict("records")]


def _case_of(name: str, known: set[str]) -> str:
    """``name`` as a case id: itself, or without a file ending and nnU-Net channel suffix when that is a case."""
    if name in known:
        return name
    stem = next((name[: -len(e)] for e in IMAGE_SUFFIXES if name.lower().endswith(e)), name)
    stem = stem[: -len(CHANNEL_SUFFIX)] if stem.endswith(CHANNEL_SUFFIX) else stem
    return stem if stem in known else name


def _convert_pair(image: Path, label: Path, folder: Path, case_id: str, mapping: dict[int, int],
                  ending: str) -> list[ConversionProblem]:
    """Worker: copy one image and transfer (copy or remap) its label; returns the problems."""
    problems = []
    for src, dst, action in ((image, folder / "imagesTr" / f"{case_id}_0000{ending}", "image"),
                             (label, folder / "labelsTr" / f"{case_id}{ending}", "label")):
        try:
            if action == "image":
                copy_image_file(src, dst)
            else:
                transfer_label(src, dst, mapping)
        except AutocmrError as exc:
            problems.append(problems_of(exc, src))
    return problems


__all__ = ["LABEL_SUFFIXES", "convert_folder", "label_mapping", "match_pairs", "parse_label_map"]
