"""benchmarks/precision_benchmark.py: mask comparison, summaries, tables and arguments (no training, no model)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
pb = pytest.importorskip("precision_benchmark")


def _masks():
    a = np.zeros((2, 10, 10), np.uint8)
    a[:, 2:6, 2:6] = 1  # LV: 32 voxels
    a[:, 6:8, 2:6] = 2  # MYO: 16
    a[:, 2:6, 6:9] = 3  # RV: 24
    b = a.copy()
    b[0, 2, 2:6] = 0  # 4 LV voxels lost
    return a, b


def test_identical_masks_agree_fully():
    a, _ = _masks()
    row = pb.compare_masks(a, a.copy(), 0.5, reference=a)
    assert row["voxel_agreement"] == 1.0 and row["foreground_agreement"] == 1.0 and row["changed_voxels"] == 0
    assert all(d == 1.0 for d in row["dice_fp32_bf16"].values())
    assert all(v == 0.0 for v in row["volume_diff_pct"].values())
    assert row["dice_ref"]["bf16"] == {"LV": 1.0, "MYO": 1.0, "RV": 1.0}


def test_a_changed_mask_gives_the_expected_dice_and_volume_difference():
    a, b = _masks()
    row = pb.compare_masks(a, b, 0.5)
    assert row["changed_voxels"] == 4
    assert row["voxel_agreement"] == pytest.approx(196 / 200)
    assert row["foreground_agreement"] == pytest.approx(68 / 72)
    assert row["dice_fp32_bf16"]["LV"] == pytest.approx(2 * 28 / (32 + 28))
    assert row["dice_fp32_bf16"]["MYO"] == 1.0
    assert row["volume_ml"]["LV"] == {"fp32": 16.0, "bf16": 14.0}
    assert row["volume_diff_pct"]["LV"] == pytest.approx(12.5)
    assert "dice_ref" not in row


def test_a_class_absent_from_both_masks_has_no_dice_and_is_left_out_of_the_summary():
    a, b = _masks()
    a2, b2 = a.copy(), b.copy()
    a2[a2 == 3] = 0
    b2[b2 == 3] = 0
    rows = [pb.compare_masks(a, b, 1.0), pb.compare_masks(a2, b2, 1.0)]
    assert rows[1]["dice_fp32_bf16"]["RV"] is None and rows[1]["volume_diff_pct"]["RV"] is None
    summary = pb.summarise_agreement(rows)
    assert summary["volumes"] == 2
    assert summary["dice_fp32_bf16"]["RV"] == {"mean": 1.0, "median": 1.0, "min": 1.0, "max": 1.0}
    assert summary["volume_diff_pct"]["LV"]["max"] == pytest.approx(12.5)


def _run(precision, epochs, loss=0.5):
    return {"precision": precision, "epoch_s": epochs, "train_loss": [1.0, loss], "val_loss": [0.9, loss],
            "pseudo_dice": [0.2, 0.7], "measurement": {"peak_pss_mb": 900.0, "wall_s": sum(epochs)}}


def test_training_summary_leaves_out_first_epochs_and_the_table_shows_the_speedup():
    runs = [_run("fp32", [300.0, 100.0, 110.0]), _run("bf16", [250.0, 60.0, 50.0]),
            _run("fp32", [300.0, 120.0, 100.0]), _run("bf16", [250.0, 60.0, 70.0])]
    s = pb.summarise_training(runs, 250)
    assert s["fp32"]["median_epoch_s"] == 105.0 and s["bf16"]["median_epoch_s"] == 60.0
    assert s["fp32"]["steady_state"] and s["fp32"]["epochs_counted"] == 4
    assert s["bf16_speedup"] == pytest.approx(1.75)
    table = pb.training_table(s, 250, 50)
    assert "| bf16 | 60.0 | 4.17 | 1.75x |" in table and table.count("\n") == 3


def test_one_epoch_runs_fall_back_to_all_epochs():
    s = pb.summarise_training([_run("fp32", [30.0]), _run("bf16", [20.0])], 10)
    assert not s["fp32"]["steady_state"] and s["bf16_speedup"] == pytest.approx(1.5)
    assert "(all epochs: 1 per run)" in pb.training_table(s, 10, 5)


def test_inference_summary_and_tables():
    runs = [{"precision": p, "predict_s": [w / 4, w / 4],
             "measurement": {"wall_s": w, "cpu_s": w, "peak_pss_mb": 1000.0, "peak_rss_mb": 1200.0}}
            for p, w in (("fp32", 40.0), ("bf16", 20.0), ("fp32", 44.0), ("bf16", 22.0))]
    s = pb.summarise_inference(runs, 2)
    assert s["fp32"]["s_per_volume"] == 21.0 and s["bf16_time_ratio"] == pytest.approx(10.5 / 21.0)
    assert s["fp32"]["network_s_per_volume"] == 10.5 and s["bf16_network_time_ratio"] == pytest.approx(0.5)
    a, b = _masks()
    agreement = pb.summarise_agreement([pb.compare_masks(a, b, 1.0, reference=a)])
    text = pb.inference_tables(s, agreement)
    assert "| bf16 | 10.50 | 0.50 | 5.25 (0.50) | 1000 | 0.933/1.000/1.000 |" in text and "| LV: Dice fp32-bf16" in text
    runs[0]["predict_s"] = [None, 1.0]  # not recorded: no network time rather than a wrong one
    assert pb.summarise_inference(runs, 2)["bf16_network_time_ratio"] is None


def test_arguments(tmp_path):
    args = pb.parse_args(["--home", str(tmp_path)])
    assert (args.epochs, args.repeats, args.limit, args.iterations, args.val_iterations) == (3, 2, 8, 250, 50)
    assert args.model == tmp_path / "results" / "Dataset101_ACDC" / "autocmrPlans_cpu__2d"
    assert args.threads is None and args.out_name == "precision_benchmark"
    with pytest.raises(SystemExit):
        pb.parse_args(["--home", str(tmp_path), "--skip-training", "--skip-inference"])
    cmd = pb.train_cmd("bf16", Path("o"), epochs=3, iterations=250, val_iterations=50)
    assert cmd[1:] == ["101", "2d", "0", "--device", "cpu", "-p", "autocmrPlans_cpu", "--epochs", "3", "--iterations",
                       "250", "--val-iterations", "50", "--no-final-validation", "--precision", "bf16", "-o", "o"]
