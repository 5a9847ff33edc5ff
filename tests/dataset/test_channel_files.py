"""The raw image layout (``CASE_XXXX<ending>``, one file per channel) read by one scanner for training,
the integrity check and prediction inputs."""
from __future__ import annotations

from pathlib import Path

import pytest

from autocmr.dataset.naming import split_channel_suffix
from autocmr.dataset.raw import list_cases, scan_channel_files
from autocmr.errors import DatasetError


@pytest.mark.parametrize("stem,expected", [("patient001_ED_0000", ("patient001_ED", 0)), ("a_0012", ("a", 12)),
                                           ("_0000", None), ("case_000", None), ("case0000", None),
                                           ("case_00001", None), ("case_abcd", None)])
def test_split_channel_suffix(stem: str, expected) -> None:
    assert split_channel_suffix(stem) == expected


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_scan_sorts_files_into_cases_channels_and_problems(tmp_path: Path) -> None:
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "b_0001.nii.gz", "c.nii.gz", "notes.txt", ".DS_Store")
    scan = scan_channel_files(tmp_path, ".nii.gz")
    assert {case: sorted(ch) for case, ch in scan.by_case.items()} == {"a": [0, 1], "b": [1]}
    assert scan.by_case["a"][1] == tmp_path / "a_0001.nii.gz"
    assert scan.misnamed == (tmp_path / "c.nii.gz",)
    assert scan.other_files == (tmp_path / "notes.txt",)  # hidden files are not listed
    assert scan.channels_wrong(2) == {"b": [1]}
    assert scan.channels_wrong(1) == {"a": [0, 1], "b": [1]}


def test_list_cases_pairs_labels_and_rejects_bad_layouts(tmp_path: Path) -> None:
    images = tmp_path / "imagesTr"
    _touch(images, "a_0000.nii.gz", "b_0000.nii.gz")
    cases = list_cases(images, tmp_path / "labelsTr", ".nii.gz", 1)
    assert [(c.case_id, c.images, c.label) for c in cases] == [
        ("a", (images / "a_0000.nii.gz",), tmp_path / "labelsTr" / "a.nii.gz"),
        ("b", (images / "b_0000.nii.gz",), tmp_path / "labelsTr" / "b.nii.gz")]
    assert cases[0].files == (images / "a_0000.nii.gz", tmp_path / "labelsTr" / "a.nii.gz")
    with pytest.raises(DatasetError, match="case a has channels \\[0\\], expected \\[0, 1\\]"):
        list_cases(images, None, ".nii.gz", 2)
    _touch(images, "plain.nii.gz")
    with pytest.raises(DatasetError, match="plain.nii.gz: image files must be named CASE_XXXX"):
        list_cases(images, None, ".nii.gz", 1)
