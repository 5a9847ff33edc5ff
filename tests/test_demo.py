"""The quick-start demo runs end to end (with a very short budget here; the README states what the
default budget reaches)."""
from __future__ import annotations

import math

import pytest

from autocmr.cli.demo import main as demo_main
from autocmr.demo import run_demo
from autocmr.errors import OutputPathError


def test_demo_leaves_every_stage_and_a_finite_table(tmp_path):
    result = run_demo(tmp_path / "demo", minutes=0.3, n_subjects=6, n_test=2)
    for sub in ("raw", "preprocessed", "results", "predictions", "evaluation", "test"):
        assert (result.folder / sub).is_dir(), sub
    assert (result.folder / "evaluation" / "summary.json").is_file()
    assert math.isfinite(result.mean_dice) and 0 <= result.mean_dice <= 1
    assert "LV" in result.report


def test_demo_cli_prints_the_dice(tmp_path, capsys):
    assert demo_main(["-o", str(tmp_path / "d"), "--minutes", "0.2", "--subjects", "5", "--test-subjects", "1"]) == 0
    assert "mean foreground Dice" in capsys.readouterr().out


def test_demo_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path, capsys):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    assert demo_main(["-o", str(precious), "--minutes", "0.1"]) == 2
    assert "not made by autocmr_demo" in capsys.readouterr().err
    assert (precious / "chapter1.tex").read_text() == "years of work"


def test_demo_folder_of_an_earlier_demo_is_cleared(tmp_path):
    from autocmr.demo import DEMO_MARKER, prepare_demo_folder

    folder = prepare_demo_folder(tmp_path / "demo")
    assert (folder / DEMO_MARKER).is_file()
    (folder / "old_prediction.nii.gz").write_text("stale")
    assert prepare_demo_folder(folder) == folder
    assert sorted(p.name for p in folder.iterdir()) == [DEMO_MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_demo_folder(empty) == empty.resolve()
    older = tmp_path / "older_demo"  # written by a version without the marker: recognised by its layout
    (older / "raw" / "Dataset900_DemoPhantom").mkdir(parents=True)
    (older / "predictions").mkdir()
    assert prepare_demo_folder(older) == older.resolve() and not (older / "predictions").exists()
    mixed = tmp_path / "mixed"
    (mixed / "raw" / "Dataset900_DemoPhantom").mkdir(parents=True)
    (mixed / "thesis.tex").write_text("x")  # anything else in it: not a demo folder
    with pytest.raises(OutputPathError):
        prepare_demo_folder(mixed)
    assert (mixed / "thesis.tex").is_file()


def test_demo_cli_exit_code_says_a_case_failed(tmp_path, monkeypatch, capsys):
    import autocmr.demo
    from autocmr.demo import DemoResult

    def fake_run(folder, **kwargs):
        return DemoResult(tmp_path, 0.5, {"train": 1.0}, "table", ("test000_ED: a.nii.gz: bad header",))

    monkeypatch.setattr(autocmr.demo, "run_demo", fake_run)
    assert demo_main(["-o", str(tmp_path / "d")]) == 1
    assert "FAILED test000_ED: a.nii.gz: bad header" in capsys.readouterr().out
