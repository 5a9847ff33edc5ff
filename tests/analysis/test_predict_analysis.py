"""``autocmr_predict`` writes the analysis beside the masks: phantom 4D cine, an ED/ES pair, a broken file."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd

from autocmr.analysis.subjects import frame_predictions
from autocmr.cli.predict import main
from autocmr.io.cine import read_cine, write_cine
from autocmr.io.image import write_image
from autocmr.testing.phantoms import make_phantom_cine, make_phantom_subject


def test_predict_writes_measures_volumes_qc_figures_and_report(tiny_model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image, _, geometry, _, _ = make_phantom_cine(11, n_frames=6, fov_mm=140.0)
    write_cine(image, geometry, inputs / "cine.nii.gz")
    for phase, case in make_phantom_subject(12, fov_mm=140.0).items():
        write_image(case.image, case.geometry, inputs / f"pat_{phase}.nii.gz")
    (inputs / "bad.nii.gz").write_bytes(b"not an image")
    code = main(["-i", str(inputs), "-o", str(out), "-m", str(tiny_model_dir), "--device", "cpu", "-j", "0"])
    assert code == 1  # the broken file failed, the others went on
    for name in ("measures.csv", "volumes.csv", "qc.csv", "report.html", "figures/cine.png", "figures/pat.png"):
        assert (out / name).is_file(), name
    measures = pd.read_csv(out / "measures.csv").set_index("subject")
    assert set(measures.index) == {"cine", "pat", "bad"}
    assert measures.loc["bad", "status"] == "failed" and measures.loc["bad", "review"]
    assert measures.loc["pat", "grouped_by"] == "name (_ED/_ES)" and measures.loc["pat", "ED_case"] == "pat_ED"
    volumes = pd.read_csv(out / "volumes.csv")
    cine = volumes[volumes["subject"] == "cine"].sort_values("frame")
    assert cine["frame"].tolist() == list(range(6))
    # how each frame was predicted: the fast path's full-accuracy frames (ED and ES among them) and the rest
    record = json.loads((out / "predictions.json").read_text())["cases"]["cine"]["cine"]
    expected = ["full accuracy" if t in record["full_accuracy_frames"] else
                "fast pass, screened slices at full accuracy" if record["screened_slices"].get(str(t)) else
                "fast pass" for t in range(6)]
    assert cine["prediction"].tolist() == expected and "fast pass" in expected
    assert set(volumes.loc[volumes["subject"] == "pat", "prediction"]) == {"full accuracy"}  # 3D cases
    # the measures' ED/ES are the extremes of the LV curve of the mask that was written
    masks, _ = read_cine(out / "cine.nii.gz")
    lv = [(m == 1).sum() for m in masks]
    assert (measures.loc["cine", "ED_frame"], measures.loc["cine", "ES_frame"]) == (np.argmax(lv), np.argmin(lv))
    assert (measures.loc["cine", "LVEDV_mL"] >= measures.loc["cine", "LVESV_mL"])
    assert np.isfinite(measures.loc["pat", "uncertainty"])  # mirrored passes give the members
    page = (out / "report.html").read_text()
    assert "figures/cine.png" in page and "bad" in page
    assert "Model and the accuracy to expect" in page and str(tiny_model_dir) in page  # which model made them
    assert not list(out.rglob(".tmp_*"))


def test_a_zero_padded_cine_frame_is_recorded_and_not_taken_for_es(tiny_model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image, _, geometry, _, _ = make_phantom_cine(11, n_frames=5, fov_mm=140.0)
    image = np.concatenate([image, np.zeros_like(image[:1])])  # a sixth frame of zeros
    write_cine(image, replace(geometry, size=geometry.size[:3] + (6,)), inputs / "padded.nii.gz")
    assert main(["-i", str(inputs), "-o", str(out), "-m", str(tiny_model_dir), "--device", "cpu", "-j", "0"]) == 0
    case = json.loads((out / "predictions.json").read_text())["cases"]["padded"]
    assert case["blank_frames"] == [5] and 5 not in (case["cine"]["ed_frame"], case["cine"]["es_frame"])
    measures = pd.read_csv(out / "measures.csv").set_index("subject")
    assert 5 not in (measures.loc["padded", "ED_frame"], measures.loc["padded", "ES_frame"])
    assert "no image content" in measures.loc["padded", "notes"]


def test_no_analysis_option_writes_masks_only(tiny_model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    case = make_phantom_subject(13, fov_mm=140.0)["ED"]
    write_image(case.image, case.geometry, inputs / "x_ED.nii.gz")
    assert main(["-i", str(inputs), "-o", str(out), "-m", str(tiny_model_dir), "--device", "cpu", "-j", "0",
                 "--no-mirror", "--no-analysis"]) == 0
    assert (out / "x_ED.nii.gz").is_file() and not (out / "measures.csv").exists()


def test_frame_predictions_from_the_fast_path_record():
    record = {"mode": "fast", "full_accuracy_frames": [3, 0], "screened_slices": {"1": [1, 2], "2": []}}
    assert frame_predictions(record, 4) == ("full accuracy", "fast pass, screened slices at full accuracy",
                                            "fast pass", "full accuracy")
    # nothing recorded, or every frame at full accuracy: no per-frame distinction
    assert frame_predictions(None, 4) == () and frame_predictions({"mode": "full"}, 4) == ()
