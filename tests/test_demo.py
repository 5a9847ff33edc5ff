"""The quick-start demo runs end to end (with a very short budget here; the README states what the
default budget reaches)."""
from __future__ import annotations

import math

from autocmr.cli.demo import main as demo_main
from autocmr.demo import run_demo


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
