"""benchmarks/precision_cv.py: the twin run folder it predicts into (no model, no prediction)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
pcv = pytest.importorskip("precision_cv")


def test_the_twin_links_the_original_and_redoes_only_validation(tmp_path):
    home, twin = tmp_path / "cv_run", tmp_path / "cv_run_bf16inf"
    model = home / pcv.MODEL
    for d in (home / "raw", home / "preprocessed", model / "fold_0" / "validation", model / "fold_1"):
        d.mkdir(parents=True)
    for name in ("plans.json", "splits.json", "postprocessing.json"):
        (model / name).write_text("{}")
    for fold in ("fold_0", "fold_1"):
        (model / fold / "checkpoint_final.pth").write_bytes(b"weights")
        (model / fold / "options.json").write_text("{}")
    (model / "fold_0" / "validation" / "a.nii.gz").write_bytes(b"fp32 mask")
    stale = twin / pcv.MODEL / "fold_0" / "validation"
    stale.mkdir(parents=True)
    (stale / "half_written.nii.gz").write_bytes(b"")

    pcv.sibling_run(home, twin, [0])
    pcv.sibling_run(home, twin, [0])  # again: links already there are kept, not an error
    mirror = twin / pcv.MODEL
    assert (twin / "raw").resolve() == (home / "raw").resolve()
    assert (mirror / "plans.json").resolve() == (model / "plans.json").resolve()
    assert not (mirror / "dataset.json").exists()  # absent in the original: no dangling link
    assert (mirror / "fold_0" / "checkpoint_final.pth").read_bytes() == b"weights"
    assert not (mirror / "fold_0" / "validation").exists()  # the cut run's folder is gone, to be redone whole
    assert not (mirror / "fold_1").exists()  # only the folds asked for
    assert (model / "fold_0" / "validation" / "a.nii.gz").read_bytes() == b"fp32 mask"  # original untouched
