"""autocmr.io.atomic: a write either lands whole under its name or leaves nothing behind."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from autocmr.io.atomic import (
    TEMP_PREFIX,
    atomic_path,
    check_output_folder,
    copy_file_atomic,
    remove_stale_temporaries,
    temporary_sibling,
    write_json_atomic,
    write_text_atomic,
)


def test_temporary_sibling_is_hidden_unique_and_keeps_the_full_suffix(tmp_path: Path) -> None:
    target = tmp_path / "case_001.nii.gz"
    first, second = temporary_sibling(target), temporary_sibling(target)
    assert first.parent == tmp_path and first.name.startswith(TEMP_PREFIX)
    assert first.name.endswith(".nii.gz")  # writers pick the format from the suffix
    assert first != second


def test_atomic_path_renames_on_success_and_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("done", encoding="utf-8")
        assert not target.exists()  # readers never see the file before it is complete
    assert target.read_text(encoding="utf-8") == "done"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_the_old_file_and_cleans_up_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_json_atomic_converts_numpy_values_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    write_json_atomic(path, {"spacing": np.array([1.5, 1.5, 10.0]), "n": np.int64(3), "file": Path("a/b.nii.gz")})
    assert json.loads(path.read_text(encoding="utf-8")) == {"spacing": [1.5, 1.5, 10.0], "n": 3, "file": "a/b.nii.gz"}


def test_write_json_atomic_refuses_unknown_types_without_leaving_a_file(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    with pytest.raises(TypeError, match="cannot serialise object"):
        write_json_atomic(path, {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_text_atomic_replaces_existing_content(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text(encoding="utf-8") == "two"


def test_remove_stale_temporaries_removes_only_temporary_files(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc_case.nii.gz").write_bytes(b"partial")
    (tmp_path / f"{TEMP_PREFIX}def_plans.json").write_text("{", encoding="utf-8")
    (tmp_path / "case.nii.gz").write_bytes(b"kept")
    (tmp_path / f"{TEMP_PREFIX}folder").mkdir()  # folders are not temporaries of atomic_path
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["case.nii.gz", f"{TEMP_PREFIX}folder"])
    assert remove_stale_temporaries(tmp_path / "missing") == 0


def test_in_a_shared_folder_only_old_temporaries_are_removed(tmp_path: Path) -> None:
    import os
    import time

    old, fresh = tmp_path / f"{TEMP_PREFIX}abc_a.b2nd", tmp_path / f"{TEMP_PREFIX}def_b.b2nd"
    old.write_bytes(b"left by a killed run")
    fresh.write_bytes(b"another process is writing this one")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert remove_stale_temporaries(tmp_path, older_than_s=3600) == 1
    assert not old.exists() and fresh.exists()


def test_copy_file_atomic_replaces_the_target_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    src, dst = tmp_path / "new.json", tmp_path / "model" / "dataset.json"
    src.write_text('{"labels": 4}', encoding="utf-8")
    dst.parent.mkdir()
    dst.write_text("old", encoding="utf-8")
    copy_file_atomic(src, dst)
    assert dst.read_text(encoding="utf-8") == '{"labels": 4}'
    assert [p.name for p in dst.parent.iterdir()] == ["dataset.json"]
    with pytest.raises(FileNotFoundError):
        copy_file_atomic(tmp_path / "missing.json", dst)
    assert dst.read_text(encoding="utf-8") == '{"labels": 4}'  # a failed copy keeps the old file
    assert [p.name for p in dst.parent.iterdir()] == ["dataset.json"]


def test_an_output_folder_is_checked_before_work_is_spent_on_it(tmp_path):
    from autocmr.errors import OutputPathError

    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(OutputPathError, match="cannot be created: .*f is a file"):
        check_output_folder(tmp_path / "f" / "out")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root (as on CI) may write anywhere: the folder is made unwritable in os.access's answer itself
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == locked and mode & os.W_OK
                      else real_access(p, mode, *a, **k))
        with pytest.raises(OutputPathError, match="no write permission"):
            check_output_folder(locked / "out")


def test_text_is_written_with_its_own_line_endings(tmp_path):
    """No newline translation: CSV text pandas ends with os.linesep stays one row per line everywhere."""
    from autocmr.io.atomic import write_text_atomic

    write_text_atomic(tmp_path / "a.csv", "a,b\r\n1,2\r\n")
    write_text_atomic(tmp_path / "b.json", "{}\n")
    assert (tmp_path / "a.csv").read_bytes() == b"a,b\r\n1,2\r\n" and (tmp_path / "b.json").read_bytes() == b"{}\n"
