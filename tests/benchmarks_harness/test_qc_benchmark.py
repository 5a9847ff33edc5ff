"""benchmarks/qc_benchmark.py without a network: exact masks stand in for the predictions, so every
original and degraded subject is good, and the wrong-label model's subjects are bad and flagged."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
qc_benchmark = pytest.importorskip("qc_benchmark")

from autocmr.analysis.pipeline import analyse_output_folder  # noqa: E402
from autocmr.analysis.subjects import read_metadata  # noqa: E402
from autocmr.io.image import read_image, write_image  # noqa: E402
from autocmr.testing.phantoms import write_phantom_dataset  # noqa: E402


def _exact_predictions(inputs: Path, raw: Path, out: Path) -> None:
    """What a perfect model would write: each input's reference mask, plus the batch record."""
    out.mkdir()
    cases = {}
    for image in sorted(inputs.glob("*_0000.nii.gz")):
        name = image.name[: -len("_0000.nii.gz")]
        original = name.split(qc_benchmark.SEP, 1)[-1]
        label, geometry = read_image(raw / "labelsTr" / f"{original}.nii.gz")
        write_image(label, geometry, out / f"{name}.nii.gz")
        cases[name] = {"kind": "3d", "sources": [str(image)], "output": str(out / f"{name}.nii.gz"),
                       "uncertainty": [0.01]}
    (out / "predictions.json").write_text(json.dumps({"input": str(inputs), "cases": cases}))


def test_scoring_and_summary_of_the_qc_benchmark(tmp_path):
    raw = write_phantom_dataset(tmp_path / "raw", n_subjects=2, seed=3)
    metadata = read_metadata(raw / "cases.csv")
    val = sorted(metadata.index)
    inputs, table_path, chosen = qc_benchmark.prepare_fold(raw, metadata, val, tmp_path / "fold_0", 1,
                                                           np.random.default_rng(0))
    assert len(chosen) == 1 and len(list(inputs.glob("*.nii.gz"))) == 4 + 2 * len(qc_benchmark.IMAGE_KINDS)
    original, _ = read_image(inputs / f"{val[0]}_0000.nii.gz")
    noisy, _ = read_image(next(inputs.glob(f"noise{qc_benchmark.SEP}*_0000.nii.gz")))
    assert noisy.shape == original.shape
    out = tmp_path / "fold_0" / "predicted"
    _exact_predictions(inputs, raw, out)
    analyse_output_folder(out, metadata=table_path)
    skipped: list[dict] = []
    rows = qc_benchmark.score_subjects(out, raw, read_metadata(table_path), 0, skipped)
    assert len(rows) == 2 + len(qc_benchmark.IMAGE_KINDS) and skipped == []
    assert all(not r["bad"] and not r["review"] and r["min_dice"] == 1.0 for r in rows)
    wrong = qc_benchmark.wrong_label_model(out, metadata, val, chosen, table_path)
    wrong_rows = qc_benchmark.score_subjects(wrong, raw, read_metadata(wrong / "cases.csv"), 0)
    assert len(wrong_rows) == 1 and wrong_rows[0]["bad"] and wrong_rows[0]["review"]
    assert wrong_rows[0]["kind"] == "wrong_labels" and wrong_rows[0]["min_dice"] < 0.5
    summary = qc_benchmark.summarise(rows + wrong_rows)
    assert summary["bad_flagged_fraction"] == 1.0 and summary["good_flagged_fraction"] == 0.0
    assert summary["by_kind"]["wrong_labels"]["flagged"] == 1
    # real and degraded subjects counted apart: the synthetic failures must not carry the verdict alone
    by_origin = summary["dice_only"]["by_origin"]
    assert by_origin["real"] == {"bad": 0, "bad_flagged": 0, "good": 2, "good_flagged": 0}
    assert by_origin["degraded"]["bad"] == by_origin["degraded"]["bad_flagged"] == 1
    assert summary["issue_definition_real"]["good"] == 2
    # exact masks: only the rounding of measures.csv's values is left
    assert all(e < 1e-3 for r in rows for e in r["measure_errors"].values())
    assert all(e < 0.05 for r in rows for e in r["ef_point_errors"].values())
    assert summary["ef_in_points"]["bad"] == 1 and summary["ef_in_points"]["bad_flagged_fraction"] == 1.0
    assert summary["measures_off_by_more_than_10_percent"] == dict.fromkeys(qc_benchmark.CHECKED, 0)


def test_ejection_fractions_read_in_points_change_the_verdict_only_for_them():
    row = {"min_dice": 0.9, "measure_errors": {"LVEDV": 0.05, "LVEF": 0.16, "RVEF": 0.02},
           "ef_point_errors": {"LVEF": 8.0, "RVEF": 1.0}}  # LVEF 50 -> 58: 16 % of it, 8 points
    assert not qc_benchmark._bad_with_ef_in_points(row)
    assert qc_benchmark._bad_with_ef_in_points({**row, "ef_point_errors": {"LVEF": 11.0, "RVEF": 1.0}})
    assert qc_benchmark._bad_with_ef_in_points({**row, "measure_errors": {"LVEDV": 0.12, "LVEF": 0.0}})
    assert qc_benchmark._bad_with_ef_in_points({**row, "ef_point_errors": {"LVEF": None, "RVEF": 1.0}})
    assert qc_benchmark._bad_with_ef_in_points({**row, "min_dice": 0.7})


def test_degradations_keep_the_geometry_and_break_the_image():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 100, size=(6, 20, 24)).astype(np.float32)
    for kind in qc_benchmark.IMAGE_KINDS:
        broken = qc_benchmark.degrade(kind, image, 0, np.random.default_rng(1))
        assert broken.shape == image.shape and np.isfinite(broken).all() and not np.allclose(broken, image)
    shuffled = qc_benchmark.degrade("shuffled_slices", image, 0, np.random.default_rng(1))
    assert sorted(shuffled.sum(axis=(1, 2)).tolist()) == pytest.approx(sorted(image.sum(axis=(1, 2)).tolist()))
    with pytest.raises(ValueError, match="unknown degradation"):
        qc_benchmark.degrade("blur", image, 0, rng)
