"""The raw dataset format: nnU-Net v2 layout read unchanged, plus an optional ``cases.csv``.

Layout::

    DatasetXXX_Name/
        dataset.json          channel_names, labels, numTraining, file_ending (nnU-Net v2)
        imagesTr/CASE_0000.nii.gz   one file per channel
        labelsTr/CASE.nii.gz
        imagesTs/...          optional
        cases.csv             optional, autocmr: one row per case, column ``case_id`` plus any of
                              ``subject`` (cases of one patient, e.g. ED and ES, share it: used for
                              patient-level folds), ``phase``, ``group``, ``vendor``, ``centre``, ...
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from autocmr.dataset.naming import split_channel_suffix, subject_from_name
from autocmr.documents.versioning import read_json_document
from autocmr.errors import DatasetError, DocumentError
from autocmr.io.atomic import write_json_atomic, write_text_atomic

CASES_CSV = "cases.csv"
DATASET_JSON = "dataset.json"
DATASET_JSON_FIX = "write it in nnU-Net v2's format, or convert the dataset again (autocmr_convert)"


@dataclass(frozen=True)
class DatasetJson:
    """The fields of nnU-Net v2's dataset.json that autocmr uses (others are kept in ``extra``)."""

    channel_names: dict[str, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str = ".nii.gz"
    name: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(v for v in self.labels.values() if v != 0)

    def to_dict(self) -> dict[str, Any]:
        d = {"channel_names": self.channel_names, "labels": self.labels, "numTraining": self.num_training,
             "file_ending": self.file_ending}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = DATASET_JSON) -> "DatasetJson":
        missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in d]
        if missing:
            v1 = ("; this is nnU-Net v1's dataset.json: v2 names 'modality' 'channel_names', maps labels name -> "
                  "value and adds 'file_ending'" if "modality" in d else "")
            raise DatasetError(f"{source}: missing required keys {missing}{v1}")
        for key in ("channel_names", "labels"):
            if not isinstance(d[key], dict):
                raise DatasetError(f"{source}: {key} must be an object of name/value pairs (nnU-Net v2), got "
                                   f"{type(d[key]).__name__} {d[key]!r}")
        labels = {str(name): _label_value(name, value, d["labels"], source) for name, value in d["labels"].items()}
        if 0 not in labels.values():
            raise DatasetError(f"{source}: labels must include background = 0, got {labels}")
        if sorted(labels.values()) != list(range(len(labels))):
            # the network has one output per label and is trained on the label value as the class index: a gap
            # (1, 2, 4), a repeated or a negative value would crash training or train a class that is never seen
            raise DatasetError(f"{source}: label values must be 0, 1, ..., {len(labels) - 1} (one per label, no gaps, "
                               f"no repeats), got {labels}; renumber them (autocmr_convert folder --label-map "
                               "'{\"4\": 3}' maps value 4 to 3)")
        known = {"channel_names", "labels", "numTraining", "file_ending", "name", "description"}
        return cls(
            channel_names={str(k): str(v) for k, v in d["channel_names"].items()},
            labels=labels,
            num_training=_count(d["numTraining"], "numTraining", source),
            file_ending=str(d["file_ending"]),
            name=str(d.get("name", "")),
            description=str(d.get("description", "")),
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def load(cls, path: str | Path) -> "DatasetJson":
        """The dataset.json in ``path``; missing, corrupt or malformed: :class:`DatasetError` naming the file."""
        path = Path(path)
        try:
            data = read_json_document(path, kind=DATASET_JSON, what_to_rerun=DATASET_JSON_FIX)
        except DocumentError as exc:  # a dataset's problem, reported as such (DocumentError is a PlansError)
            raise DatasetError(str(exc)) from exc
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())


def _whole_number(value: Any) -> int | None:
    """``value`` as an int when JSON holds a whole number (``3``, ``3.0``, ``"3"``), else None (``True`` too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _label_value(name: Any, value: Any, labels: dict[str, Any], source: str) -> int:
    """One label's value; a region, a name or another non-integer is a :class:`DatasetError` saying why."""
    if isinstance(value, (list, tuple)):
        raise DatasetError(f"{source}: label {name!r} is a region {value}; region-based training is "
                           "not supported by autocmr, give one integer per label")
    number = _whole_number(value)
    if number is not None:
        return number
    # nnU-Net v1 wrote labels value -> name ({"0": "background"}); v2 writes name -> value
    hint = ""
    if all(_whole_number(k) is not None for k in labels) and all(isinstance(v, str) for v in labels.values()):
        v2 = json.dumps({v: _whole_number(k) for k, v in labels.items()})
        hint = f"; this is nnU-Net v1's direction (value -> name), nnU-Net v2 maps name -> value: \"labels\": {v2}"
    raise DatasetError(f"{source}: label {name!r} has the value {value!r}, expected an integer{hint}")


def _count(value: Any, key: str, source: str) -> int:
    number = _whole_number(value)
    if number is None or number < 0:
        raise DatasetError(f"{source}: {key} must be a whole number of cases, got {value!r}")
    return number


@dataclass(frozen=True)
class RawCase:
    case_id: str
    images: tuple[Path, ...]  # one per channel, channel order
    label: Path | None

    @property
    def files(self) -> tuple[Path, ...]:
        """Its channel images, then its label when it has one."""
        return self.images + ((self.label,) if self.label else ())


def hash_file_stats(h: Any, files: Iterable[Path]) -> None:
    """Add each file's name, size and modification time to the hashlib object ``h``: the signature of raw data
    (fingerprint, preprocessed cases) changes when a file is replaced or edited, without reading the files."""
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())


@dataclass(frozen=True)
class RawDataset:
    """A raw dataset folder: its dataset.json, its training cases and their metadata."""

    root: Path
    dataset_json: DatasetJson
    cases: tuple[RawCase, ...]
    metadata: pd.DataFrame  # indexed by case_id; at least a ``subject`` column

    @property
    def name(self) -> str:
        return self.root.name

    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def subjects(self) -> dict[str, list[str]]:
        """Subject id -> its case ids (sorted), for patient-level cross-validation."""
        groups: dict[str, list[str]] = {}
        for case_id, subject in self.metadata["subject"].items():
            groups.setdefault(str(subject), []).append(str(case_id))
        return {s: sorted(c) for s, c in sorted(groups.items())}


@dataclass(frozen=True)
class ChannelFiles:
    """What a folder in the raw layout holds: ``CASE_XXXX<ending>`` images, one file per channel XXXX."""

    by_case: dict[str, dict[int, Path]]  # case id -> channel -> file
    misnamed: tuple[Path, ...]  # ends in the file ending but has no _XXXX channel suffix
    other_files: tuple[Path, ...]  # does not end in the file ending (hidden files are not listed at all)

    def channels_wrong(self, num_channels: int) -> dict[str, list[int]]:
        """Case id -> the channels found, for every case whose channels are not exactly 0 .. num_channels-1."""
        expected = list(range(num_channels))
        return {c: sorted(ch) for c, ch in sorted(self.by_case.items()) if sorted(ch) != expected}


def scan_channel_files(images_dir: Path, file_ending: str) -> ChannelFiles:
    """Sort the files of ``images_dir`` into cases and channels (the one reader of the raw image layout)."""
    by_case: dict[str, dict[int, Path]] = {}
    misnamed, other = [], []
    for f in sorted(images_dir.iterdir()):
        if f.name.startswith("."):
            continue
        if not f.name.endswith(file_ending):
            other.append(f)
        elif (parsed := split_channel_suffix(f.name[: -len(file_ending)])) is None:
            misnamed.append(f)
        else:
            by_case.setdefault(parsed[0], {})[parsed[1]] = f
    return ChannelFiles(by_case, tuple(misnamed), tuple(other))


def list_cases(images_dir: Path, labels_dir: Path | None, file_ending: str, num_channels: int) -> list[RawCase]:
    """Cases from the ``CASE_XXXX<ending>`` files in ``images_dir`` (labels matched by case id)."""
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: images folder not found")
    scan = scan_channel_files(images_dir, file_ending)
    if scan.misnamed:
        raise DatasetError(f"{scan.misnamed[0]}: image files must be named CASE_XXXX{file_ending} (XXXX = channel)")
    if wrong := scan.channels_wrong(num_channels):
        case_id, found = next(iter(wrong.items()))
        raise DatasetError(f"{images_dir}: case {case_id} has channels {found}, expected {list(range(num_channels))}")
    cases = []
    for case_id, channels in sorted(scan.by_case.items()):
        label = labels_dir / f"{case_id}{file_ending}" if labels_dir is not None else None
        cases.append(RawCase(case_id, tuple(channels[c] for c in range(num_channels)), label))
    return cases


CASE_TABLE_COLUMNS = ("case_id", "subject", "phase")  # the columns of cases.csv autocmr pairs and splits by


def read_case_table(path: str | Path, *, dtype: Any = None) -> pd.DataFrame:
    """``cases.csv`` as its readers expect it (``pandas.read_csv`` errors pass through). Spreadsheet exports
    leave a space after each comma (``case_id, subject``) and capitalise headers (``Subject``): read as they
    are, the subject column would be missed and a patient's two phases could land in different
    cross-validation folds without a word. Column names are stripped, one of :data:`CASE_TABLE_COLUMNS` but for
    its case is renamed to it (unless the table has that exact column too), and those columns are read as
    stripped text (``dtype``: how the other columns are read; default: inferred)."""
    header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    stripped = [c.strip() for c in header]
    names = [n.lower() if n.lower() in CASE_TABLE_COLUMNS and n.lower() not in stripped else n for n in stripped]
    as_text = {old: str for old, new in zip(header, names) if new in CASE_TABLE_COLUMNS}
    table = pd.read_csv(path, dtype=dtype if dtype is not None else as_text).set_axis(names, axis=1)
    for column in CASE_TABLE_COLUMNS:
        if column in table.columns:
            table[column] = table[column].str.strip()
    return table


def load_metadata(root: Path, case_ids: list[str]) -> pd.DataFrame:
    """Read ``cases.csv`` if present; every case gets a row, ``subject`` defaults to the one its name gives
    (:func:`autocmr.dataset.naming.subject_from_name`: ``P1_ED``/``P1_ES`` -> ``P1``), else the case id."""
    path = root / CASES_CSV
    if path.is_file():
        try:
            table = read_case_table(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read as CSV ({exc}); save it as UTF-8 comma-separated text") from exc
        if "case_id" not in table.columns:
            raise DatasetError(f"{path}: needs a 'case_id' column, found {list(table.columns)}")
        if table["case_id"].duplicated().any():
            dupes = sorted(table.loc[table["case_id"].duplicated(), "case_id"].unique())
            raise DatasetError(f"{path}: duplicated case ids {dupes[:5]}")
        table = table.set_index("case_id")
    else:
        table = pd.DataFrame(index=pd.Index([], name="case_id"))
    table = table.reindex(case_ids)
    named = pd.Series([subject_from_name(str(c)) for c in table.index], index=table.index)
    if "subject" not in table.columns:
        table["subject"] = named
    table["subject"] = table["subject"].fillna(named).astype(str)
    return table


def load_raw_dataset(root: str | Path) -> RawDataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: raw dataset folder not found")
    dj = DatasetJson.load(root / DATASET_JSON)
    cases = list_cases(root / "imagesTr", root / "labelsTr", dj.file_ending, dj.num_channels)
    if not cases:
        raise DatasetError(f"{root / 'imagesTr'}: no training images ending in {dj.file_ending}")
    metadata = load_metadata(root, [c.case_id for c in cases])
    return RawDataset(root, dj, tuple(cases), metadata)


def write_cases_csv(root: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write per-case metadata (each row needs ``case_id``) atomically."""
    table = pd.DataFrame(rows)
    if "case_id" not in table.columns:
        raise ValueError("each metadata row needs a 'case_id'")
    cols = ["case_id"] + (["subject"] if "subject" in table.columns else [])
    table = table[cols + [c for c in table.columns if c not in cols]]
    write_text_atomic(Path(root) / CASES_CSV, table.to_csv(index=False))
