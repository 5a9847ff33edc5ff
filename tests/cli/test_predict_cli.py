"""``autocmr_predict`` end to end: a folder mixing every input kind and broken files, sharding, --continue,
model selection by dataset, and exit codes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autocmr.cli.predict import main
from autocmr.io.cine import read_cine, write_cine
from autocmr.io.dicom import read_dicom_series
from autocmr.inference.batch import PredictorOptions
from autocmr.io.image import Geometry, read_header, read_image, write_image
from autocmr.testing.phantoms import make_phantom_cine
from tests.helpers import small_case, temporaries, write_dicom_series

HEADER_TOLERANCE = 1e-5
FAST = ["--no-mirror", "--device", "cpu"]  # plumbing tests: the network's quality is not under test


def _small_cine(path: Path) -> Geometry:
    """2 frames and 4 slices of a make_phantom_cine cine, to keep the network's work small."""
    image, _, g4, _, _ = make_phantom_cine(31, n_frames=3, fov_mm=120.0, oblique=True)  # 3: its minimum
    g4 = Geometry(g4.size[:2] + (4, 2), g4.spacing, g4.origin, g4.direction)
    write_cine(np.ascontiguousarray(image[:2, :4]), g4, path)
    return g4


def _mixed_folder(src: Path) -> None:
    for name, seed in (("good_0000", 21), ("plain", 22)):
        case = small_case(seed, slices=4)
        write_image(case.image, case.geometry, src / f"{name}.nii.gz")
    _small_cine(src / "cine.nii.gz")
    phases = [small_case(23, slices=3, phase=p).image for p in (0.0, 1.0)]
    write_dicom_series(src / "dicom_study", np.round(np.stack(phases)).astype(np.int16), series_number=5,
                       description="sax cine")
    # Broken inputs, each must be reported with its file.
    case = small_case(24, slices=3)
    write_image(case.image, case.geometry, src / "truncated.nii.gz")
    data = (src / "truncated.nii.gz").read_bytes()
    (src / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (src / "text.nii.gz").write_text("I am not an image\n")
    nan_image = case.image.copy()
    nan_image[1, 5:9, 5:9] = np.nan
    write_image(nan_image, case.geometry, src / "nan.mha")  # ITK's NIfTI reader turns NaN into 0; MHA keeps it
    write_image(case.image, case.geometry, src / "twochan_0000.nii.gz")
    write_image(case.image, case.geometry, src / "twochan_0001.nii.gz")


def test_mixed_folder(tmp_path, tiny_model_dir, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _mixed_folder(src)
    rc = main(["-i", str(src), "-o", str(out), "-m", str(tiny_model_dir), "-j", "1", "--save-probabilities",
               "--postprocess", "on"] + FAST)
    assert rc == 1
    assert "4 failed" in capsys.readouterr().out
    failures = {f["name"]: f for f in json.loads((out / "failures.json").read_text())}
    assert set(failures) == {"truncated", "text", "nan", "twochan"}
    for name, f in failures.items():
        assert Path(f["file"]).name.startswith(name) and f["reason"], f
    assert "NaN" in failures["nan"]["reason"] and "expects 1" in failures["twochan"]["reason"]
    assert "truncated" in failures["truncated"]["reason"]
    assert failures["text"]["reason"].startswith("not an image")

    dicom_name = "dicom_study_s5_sax_cine"
    for name in ("good", "plain", "cine", dicom_name):
        assert (out / f"{name}.nii.gz").is_file() and (out / f"{name}_probabilities.npz").is_file()
    for name, source in (("good", "good_0000"), ("plain", "plain")):
        expected = read_header(src / f"{source}.nii.gz")
        assert not read_header(out / f"{name}.nii.gz").differences(expected, HEADER_TOLERANCE)
    mask, g4 = read_cine(out / "cine.nii.gz")
    assert mask.dtype == np.uint8 and g4.dim == 4
    assert not g4.differences(read_header(src / "cine.nii.gz"), HEADER_TOLERANCE)
    with np.load(out / "cine_probabilities.npz") as npz:
        assert npz["probabilities"].shape == (2, 4) + mask.shape[1:]
    volume = read_dicom_series(src / "dicom_study")
    assert volume.is_cine
    assert not read_header(out / f"{dicom_name}.nii.gz").differences(volume.geometry, HEADER_TOLERANCE)
    copy, copy_geometry = read_cine(out / "images_from_dicom" / f"{dicom_name}.nii.gz")
    np.testing.assert_array_equal(copy, volume.array)
    assert not copy_geometry.differences(volume.geometry, HEADER_TOLERANCE)
    record = json.loads((out / "predictions.json").read_text())
    assert record["predictor"]["model"] == str(tiny_model_dir) and record["cases"]["cine"]["seconds"]["frames"] == 2
    assert record["predictor"]["postprocessing"]["foreground_lcc"] is True
    # Worker processes (-j 1) give the same mask as the in-memory API in this process.
    predictor = PredictorOptions(device="cpu", mirror=False, postprocess="on").build(tiny_model_dir)
    image, geometry = read_image(src / "plain.nii.gz")
    expected = predictor.predict_array(image, geometry.spacing_zyx, direction=geometry.direction).label
    np.testing.assert_array_equal(read_image(out / "plain.nii.gz")[0], expected)
    assert not temporaries(out)


def test_sharding_and_continue(tmp_path, tiny_model_dir):
    src, out = tmp_path / "in", tmp_path / "out"
    for seed in range(3):
        case = small_case(40 + seed, slices=3)
        write_image(case.image, case.geometry, src / f"case{seed}.nii.gz")
    base = ["-i", str(src), "-o", str(out), "-m", str(tiny_model_dir), "-j", "0"] + FAST
    parts = []
    for part in (0, 1):
        assert main(base + ["--num-parts", "2", "--part-id", str(part)]) == 0
        parts.append(json.loads((out / f"predictions_part{part}.json").read_text())["done"])
        assert json.loads((out / f"failures_part{part}.json").read_text()) == []
    assert sorted(parts[0] + parts[1]) == ["case0", "case1", "case2"] and not set(parts[0]) & set(parts[1])
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("case*.nii.gz")}
    assert len(stamps) == 3
    assert main(base + ["--continue"]) == 0
    record = json.loads((out / "predictions.json").read_text())
    assert record["skipped"] == ["case0", "case1", "case2"] and record["done"] == []
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("case*.nii.gz")}
    assert not temporaries(out)


def test_parts_keep_a_subjects_ed_and_es_together(tmp_path, tiny_model_dir):
    import pandas as pd

    src, out = tmp_path / "in", tmp_path / "out"
    for name, phase in (("u1", 0.0), ("u2", 1.0), ("v_ED", 0.0), ("v_ES", 1.0)):
        case = small_case(60, slices=3, phase=phase)
        write_image(case.image, case.geometry, src / f"{name}.nii.gz")
    # u1 and u2 pair only through cases.csv (found in the input folder), v_ED and v_ES through their names
    pd.DataFrame({"case_id": ["u1", "u2"], "subject": ["U", "U"], "phase": ["ED", "ES"]}).to_csv(
        src / "cases.csv", index=False)
    base = ["-i", str(src), "-o", str(out), "-m", str(tiny_model_dir), "-j", "0"] + FAST
    done = []
    for part in (0, 1):
        assert main(base + ["--num-parts", "2", "--part-id", str(part)]) == 0
        done.append(json.loads((out / f"predictions_part{part}.json").read_text())["done"])
        measures = pd.read_csv(out / f"measures_part{part}.csv")
        assert len(measures) == 1 and measures["ED_case"].notna().all() and measures["ES_case"].notna().all()
    assert done == [["u1", "u2"], ["v_ED", "v_ES"]]


def test_side_files_of_an_acdc_like_folder_are_skipped_not_failed(tmp_path, tiny_model_dir, capsys):
    """Issue 17: ``Info.cfg`` and ``cases.csv`` beside the images made the run fail with "not an image"."""
    src, out = tmp_path / "in", tmp_path / "out"
    for frame, phase in ((1, 0.0), (12, 1.0)):
        case = small_case(50, slices=3, phase=phase)
        write_image(case.image, case.geometry, src / f"patient001_frame{frame:02d}.nii.gz")
    (src / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    (src / "cases.csv").write_text("case_id,subject,phase\npatient001_frame01,patient001,ED\n"
                                   "patient001_frame12,patient001,ES\n")
    (src / "notes.txt").write_text("scanned on the old magnet\n")
    for frame, phase in ((1, 0.0), (12, 1.0)):  # ACDC's reference segmentations beside the images: skipped
        case = small_case(50, slices=3, phase=phase)
        write_image(case.label, case.geometry, src / f"patient001_frame{frame:02d}_gt.nii.gz")
    assert main(["-i", str(src), "-o", str(out), "-m", str(tiny_model_dir), "-j", "0"] + FAST) == 0
    assert "0 failed" in capsys.readouterr().out
    assert json.loads((out / "failures.json").read_text()) == []
    assert json.loads((out / "predictions.json").read_text())["done"] == ["patient001_frame01",
                                                                         "patient001_frame12"]
    measures = (out / "measures.csv").read_text().splitlines()  # the cases.csv still pairs ED and ES
    assert len(measures) == 2 and measures[1].startswith("patient001,")


def test_model_by_dataset_and_results_root(tmp_path, tiny_model_dir, monkeypatch):
    results = tiny_model_dir.parent.parent
    case = small_case(50, slices=3)
    write_image(case.image, case.geometry, tmp_path / "in" / "one.nii.gz")
    out = tmp_path / "out"
    args = ["-i", str(tmp_path / "in"), "-o", str(out), "-d", "990", "-c", "2d"] + FAST
    assert main(args + ["--results", str(results), "--harmonise"]) == 0  # on the CPU the CPU plans are picked
    assert (out / "one.nii.gz").is_file()
    monkeypatch.setenv("AUTOCMR_RESULTS", str(results))
    # env var instead of the flag; nothing left to predict (harmonised again: a switch would be refused)
    assert main(args + ["--continue", "-f", "0", "--harmonise"]) == 0
    record = json.loads((out / "predictions.json").read_text())
    assert record["predictor"]["model"].endswith("autocmrPlans_cpu__2d") and record["skipped"] == ["one"]


def test_usage_and_model_errors_exit_2(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "in").mkdir()
    geometry = Geometry((5, 4, 3), (1.0, 1.0, 8.0), (0.0,) * 3, tuple(np.eye(3).ravel().tolist()))
    write_image(np.ones((3, 4, 5), np.float32), geometry, tmp_path / "in" / "a.nii.gz")
    io = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    cases = [
        io + ["-m", str(tmp_path / "no_model")],  # not a model folder
        io + ["-d", "990", "-c", "2d", "--results", str(tmp_path / "empty")],  # no such dataset
        io + ["-m", str(tiny_model_dir), "-f", "3"],  # fold without a checkpoint
        ["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out"), "-m", str(tiny_model_dir)],
    ]
    for argv in cases:
        assert main(argv + ["--device", "cpu"]) == 2, argv
        err = capsys.readouterr().err
        assert any(line.startswith("error: ") for line in err.splitlines()) and "Traceback" not in err, err
    (tmp_path / "a_file").write_text("keep me")
    for out, reason in ((tmp_path / "a_file", "is a file, not a folder"),
                        (tmp_path / "a_file" / "sub", "a_file is a file")):
        assert main(["-i", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_model_dir), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert f"error: {out}: cannot be created" in err or f"error: {out}: is a file" in err, err
        assert reason in err and "Traceback" not in err
    assert (tmp_path / "a_file").read_text() == "keep me"
    with pytest.raises(SystemExit) as exc:
        main(io + ["-d", "990"])  # -c missing
    assert exc.value.code == 2
    assert not (tmp_path / "out" / "a.nii.gz").exists()


def test_a_single_input_file_that_is_no_image_is_a_usage_error(tmp_path, tiny_model_dir, capsys):
    """``-i notes.txt`` (one file, nothing to predict) exits 2 naming the file, as a missing ``-i`` does; it is
    not a batch whose one case failed (exit 1, an output folder holding only failures.json)."""
    notes = tmp_path / "notes.nii.gz"
    notes.write_text("I am not an image\n")
    out = tmp_path / "out"
    assert main(["-i", str(notes), "-o", str(out), "-m", str(tiny_model_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"error: {notes}: not an image" in err and "Traceback" not in err, err
    assert not out.exists()


def test_devices_that_all_refuse_their_part_exit_2(tmp_path, capsys):
    """--devices with a bad -m: each device's process refuses (exit status 2), so the run does, as without
    --devices (README: 2 = bad options or model), not 1 (some cases failed)."""
    case = small_case(40)
    write_image(case.image, case.geometry, tmp_path / "in" / "p.nii.gz")
    argv = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "no_model"),
            "--devices", "cpu", "--no-analysis", "-j", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: cpu: refused to predict" in err and "Traceback" not in err, err


def test_devices_of_one_machine_give_one_analysed_folder_with_one_report(tmp_path, tiny_model_dir):
    """--devices cpu cpu: the parts are merged at the end and the folder analysed once, as a run without
    --devices would be: one report.html, measures for every subject, no per-device reports."""
    for seed, name in enumerate(["p", "q", "r"]):
        case = small_case(40 + seed)
        write_image(case.image, case.geometry, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    argv = ["-i", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_model_dir), "--devices", "cpu", "cpu",
            "--no-mirror", "-j", "0"]
    assert main(argv) == 0
    assert (out / "report.html").is_file() and not list(out.glob("report_part*.html"))
    assert not list(out.glob("measures_part*.csv"))
    import pandas as pd

    assert sorted(pd.read_csv(out / "measures.csv")["subject"]) == ["p", "q", "r"]
