"""Dataset identifiers as in nnU-Net: ``Dataset101_ACDC``, addressable as ``101`` or by full name."""
from __future__ import annotations

import re
from pathlib import Path

from autocmr.errors import DatasetError

_NAME = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
# a case named after its subject and cardiac phase (SUBJECT_ED, SUBJECT-es) or cine frame (ACDC's SUBJECT_frame01)
PHASE_IN_NAME = re.compile(r"^(?P<subject>.+)[_\-](?P<phase>ED|ES)$", re.IGNORECASE)
FRAME_IN_NAME = re.compile(r"^(?P<subject>.+)_frame(?P<frame>\d+)$", re.IGNORECASE)


# what a preprocessed case's own files add to its id (``CASE_seg.b2nd``, ``CASE_locs.npz``, autocmr.preprocessing
# .storage): a case named like another's id plus one of them would share that case's files
SEG_SUFFIX, LOCATIONS_SUFFIX = "_seg", "_locs"
STORED_FILE_SUFFIXES = (SEG_SUFFIX, LOCATIONS_SUFFIX)


# names of files the preprocessed data folder holds beside the cases' (CASE.json): no case may be called so
RESERVED_CASE_IDS = frozenset({"configuration"})


def colliding_case_ids(case_ids: "set[str] | list[str]") -> list[tuple[str, str]]:
    """Pairs (A, A_seg) or (A, A_locs) among ``case_ids``: A's label map is stored as ``A_seg.b2nd``, the file
    that would hold case A_seg's image, so preprocessing both would overwrite one with the other."""
    known = set(case_ids)
    return sorted((c, c + suffix) for c in known for suffix in STORED_FILE_SUFFIXES if c + suffix in known)


def subject_from_name(case_id: str) -> str:
    """The subject a case's name gives (``P1_ED`` and ``P1_ES`` -> ``P1``; ``patient001_frame01`` ->
    ``patient001``), else the case id itself: without a ``cases.csv``, one patient's phases still share a
    subject, so cross-validation never puts one in training and the other in validation."""
    match = PHASE_IN_NAME.match(case_id) or FRAME_IN_NAME.match(case_id)
    return match.group("subject") if match else case_id
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net's CASE_XXXX, XXXX = channel


def split_channel_suffix(stem: str) -> tuple[str, int] | None:
    """``("CASE", 1)`` for the channel file stem ``CASE_0001`` (name without its file ending); None when the
    stem has no four-digit ``_XXXX`` suffix."""
    match = _CHANNEL_SUFFIX.match(stem)
    return (match.group("case"), int(match.group("channel"))) if match else None


def make_dataset_name(dataset_id: int, short_name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise DatasetError(f"dataset id must be between 1 and 999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", short_name):
        raise DatasetError(f"dataset short name {short_name!r} may only contain letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{short_name}"


def resolve_dataset_name(identifier: str | int, *search_roots: Path) -> str:
    """Turn ``101``, ``"101"`` or ``"Dataset101_ACDC"`` into the full name, looking in ``search_roots``.

    A full name is returned as is (it may not exist yet). A bare id must match exactly one folder across
    the roots; otherwise a :class:`DatasetError` lists what was found.
    """
    text = str(identifier).strip()
    if _NAME.match(text):
        return text
    if not text.isdigit():
        raise DatasetError(f"dataset {text!r}: give an id such as 101 or a name such as Dataset101_ACDC")
    prefix = f"Dataset{int(text):03d}_"
    found = sorted({p.name for root in search_roots if Path(root).is_dir()
                    for p in Path(root).iterdir() if p.is_dir() and p.name.startswith(prefix)})
    if len(found) == 1:
        return found[0]
    where = ", ".join(str(r) for r in search_roots)
    if not found:
        raise DatasetError(f"no dataset with id {int(text)} in {where}; convert or copy one there first "
                           f"(e.g. `autocmr_convert acdc PATH -d {int(text)}`)")
    raise DatasetError(f"dataset id {int(text)} is ambiguous in {where}: {found}; use the full name")
