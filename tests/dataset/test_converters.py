"""Dataset converters: ACDC (a few real patients), a synthetic M&Ms tree, plain folders, and the CLI."""
from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autocmr.cli.convert import main
from autocmr.dataset.converters import convert_acdc, convert_folder, convert_mnms
from autocmr.dataset.converters.common import STAGING_PREFIX, summarize_dataset
from autocmr.dataset.converters.mnms import read_mnms_info
from autocmr.dataset.integrity import check_dataset
from autocmr.dataset.raw import DatasetJson, load_raw_dataset
from autocmr.errors import ConfigurationError, DatasetError
from autocmr.io.image import Geometry, read_header, read_image, write_image
from autocmr.testing.phantoms import make_phantom_case, make_phantom_cine, write_phantom_dataset

# patient001 (DCM) and patient061 (NOR): two pathology groups, different frame numbers.
ACDC_PATIENTS = ("patient001", "patient061")


@pytest.fixture()
def acdc_subset(acdc_root: Path, tmp_path: Path) -> Path:
    src = tmp_path / "acdc"
    for patient in ACDC_PATIENTS:
        shutil.copytree(acdc_root / patient, src / patient)
    return src


def _staging_left(raw: Path) -> list[Path]:
    return [p for p in raw.iterdir() if p.name.startswith(STAGING_PREFIX)] if raw.is_dir() else []


def test_acdc_real_patients(acdc_subset: Path, tmp_path: Path) -> None:
    # patient003 without ground truth stands for the ACDC testing layout.
    test_patient = acdc_subset / "patient003"
    test_patient.mkdir()
    original = acdc_subset / "patient001"
    shutil.copy(original / "Info.cfg", test_patient / "Info.cfg")
    for frame in ("01", "12"):
        shutil.copy(original / f"patient001_frame{frame}.nii.gz", test_patient / f"patient003_frame{frame}.nii.gz")
    raw = tmp_path / "raw"

    folder = convert_acdc(acdc_subset, raw, 101, num_workers=2)

    assert folder == raw / "Dataset101_ACDC"
    dj = DatasetJson.load(folder / "dataset.json")
    assert dj.labels == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    assert dj.channel_names == {"0": "cineMRI"} and dj.num_training == 4
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        "patient003_frame01_0000.nii.gz", "patient003_frame12_0000.nii.gz"]
    dataset = load_raw_dataset(folder)
    assert dataset.case_ids() == ["patient001_frame01", "patient001_frame12", "patient061_frame01",
                                  "patient061_frame10"]
    assert dataset.subjects()["patient001"] == ["patient001_frame01", "patient001_frame12"]
    row = dataset.metadata.loc["patient001_frame12"]
    assert (row["phase"], int(row["frame"]), row["group"], float(row["height"]), float(row["weight"]),
            int(row["n_frames"]), row["vendor"], row["centre"]) == ("ES", 12, "DCM", 184.0, 95.0, 30,
                                                                     "Siemens", "Dijon")
    assert dataset.metadata.loc["patient061_frame01", "group"] == "NOR"
    assert dataset.metadata.loc["patient061_frame01", "phase"] == "ED"

    src_image = original / "patient001_frame01.nii.gz"
    src_label, src_geometry = read_image(original / "patient001_frame01_gt.nii.gz")
    label, geometry = read_image(folder / "labelsTr" / "patient001_frame01.nii.gz")
    assert np.array_equal(label == 1, src_label == 3)  # LV cavity was 3 in ACDC
    assert np.array_equal(label == 2, src_label == 2)
    assert np.array_equal(label == 3, src_label == 1)
    assert (label == 1).sum() > 1000
    assert read_header(src_image).differences(geometry, tol=1e-6) == []
    assert filecmp.cmp(src_image, folder / "imagesTr" / "patient001_frame01_0000.nii.gz", shallow=False)
    assert check_dataset(folder).ok
    assert _staging_left(raw) == []


def _break_acdc_subset(acdc_subset: Path) -> None:
    """A bad label value (patient001 ES), a missing label (patient061 ES), a patient without Info.cfg."""
    p1, p61 = (acdc_subset / p for p in ACDC_PATIENTS)
    label, geometry = read_image(p1 / "patient001_frame12_gt.nii.gz")
    label[0, 0, 0] = 5
    (p1 / "patient001_frame12_gt.nii.gz").unlink()
    write_image(label, geometry, p1 / "patient001_frame12_gt.nii.gz")
    (p61 / "patient061_frame10_gt.nii.gz").unlink()
    broken = acdc_subset / "patient099"
    broken.mkdir()
    shutil.copy(p61 / "patient061_frame01.nii.gz", broken / "patient099_frame01.nii.gz")


def test_acdc_strict_collects_all_problems_and_writes_nothing(acdc_subset: Path, tmp_path: Path) -> None:
    _break_acdc_subset(acdc_subset)
    raw = tmp_path / "raw"

    with pytest.raises(DatasetError) as info:
        convert_acdc(acdc_subset, raw, 101, num_workers=1, strict=True)

    message = str(info.value)
    assert "patient001_frame12_gt.nii.gz: label values [5]" in message
    assert "patient061_frame10.nii.gz: no ground truth" in message
    assert "patient099/Info.cfg: Info.cfg not found" in message
    assert not (raw / "Dataset101_ACDC").exists() and _staging_left(raw) == []


def test_acdc_skips_bad_frames_and_converts_the_rest(acdc_subset: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    _break_acdc_subset(acdc_subset)
    (acdc_subset / "patient061" / "patient061_frame01.nii.gz").unlink()  # and a missing ED frame
    raw = tmp_path / "raw"

    folder = convert_acdc(acdc_subset, raw, 101, num_workers=1)

    # Only patient001's ED frame is intact: every other frame is listed, nothing half-written remains.
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["patient001_frame01_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["patient001_frame01.nii.gz"]
    assert not (folder / "imagesTs").exists()
    assert DatasetJson.load(folder / "dataset.json").num_training == 1
    assert list(pd.read_csv(folder / "cases.csv")["case_id"]) == ["patient001_frame01"]
    skipped = json.loads((folder / "conversion_skipped.json").read_text())
    assert skipped["converted_cases"] == 1
    reasons = {f"{Path(s['file']).parent.name}/{Path(s['file']).name}": s["reason"] for s in skipped["skipped"]}
    assert "label values [5]" in reasons["patient001/patient001_frame12_gt.nii.gz"]
    assert "no ground truth" in reasons["patient061/patient061_frame10.nii.gz"]
    assert "label without its image" in reasons["patient061/patient061_frame01_gt.nii.gz"]
    assert "ED is frame 1 but no image" in reasons["patient061/Info.cfg"]
    assert "Info.cfg not found" in reasons["patient099/Info.cfg"]
    assert len(reasons) == len(skipped["skipped"]) == 5
    assert "5 source file(s) skipped, 1 case(s) converted" in caplog.text
    assert "5 source file(s) skipped" in summarize_dataset(folder)
    assert check_dataset(folder).ok and _staging_left(raw) == []


def test_acdc_overwrite_policy(acdc_subset: Path, tmp_path: Path) -> None:
    shutil.rmtree(acdc_subset / "patient061")
    raw = tmp_path / "raw"
    folder = convert_acdc(acdc_subset, raw, 101, num_workers=1)
    marker = folder / "marker.txt"
    marker.write_text("old")

    with pytest.raises(DatasetError, match="already exists"):
        convert_acdc(acdc_subset, raw, 101, num_workers=1)
    # A failing conversion with overwrite=True leaves the old dataset untouched.
    (acdc_subset / "patient001" / "Info.cfg").unlink()
    with pytest.raises(DatasetError, match="Info.cfg not found"):
        convert_acdc(acdc_subset, raw, 101, num_workers=1, overwrite=True)
    assert marker.read_text() == "old"
    (acdc_subset / "patient001" / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\n"
                                                         "NbFrame: 30\nWeight: 95.0\n")
    assert convert_acdc(acdc_subset, raw, 101, num_workers=1, overwrite=True) == folder
    assert not marker.exists() and (folder / "labelsTr" / "patient001_frame12.nii.gz").is_file()
    assert _staging_left(raw) == []


def _write_mnms_subject(root: Path, code: str, seed: int, *,
                        labelled: bool) -> tuple[np.ndarray, np.ndarray, Geometry, int, int]:
    cine, gt, g4, ed, es = make_phantom_cine(seed, n_frames=6, fov_mm=100)
    annotated = np.zeros_like(gt)
    annotated[[ed, es]] = gt[[ed, es]]  # M&Ms labels exist on the ED and ES frames only
    write_image(cine, g4, root / code / f"{code}_sa.nii.gz")
    if labelled:
        write_image(annotated, g4, root / code / f"{code}_sa_gt.nii.gz")
    return cine, annotated, g4, ed, es


def _mnms_tree(tmp_path: Path) -> tuple[Path, Path, dict]:
    source = tmp_path / "MnMs"
    subjects = {"A0S9V9": _write_mnms_subject(source / "Training" / "Labeled", "A0S9V9", 1, labelled=True),
                "B2C3D4": _write_mnms_subject(source / "Validation", "B2C3D4", 2, labelled=True),
                "E5F6G7": _write_mnms_subject(source / "Testing", "E5F6G7", 3, labelled=False)}
    # The official CSV's layout: an unnamed index column, then these columns.
    rows = [(i, code, name, letter, centre, v[3], v[4], pathology) for i, (code, name, letter, centre, pathology, v)
            in enumerate([("A0S9V9", "Siemens", "A", 1, "HCM", subjects["A0S9V9"]),
                          ("B2C3D4", "Philips", "B", 2, "NOR", subjects["B2C3D4"]),
                          ("E5F6G7", "GE", "C", 4, "DCM", subjects["E5F6G7"]),
                          ("Z9Z9Z9", "Canon", "D", 5, "NOR", subjects["E5F6G7"])])]
    info = tmp_path / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
    pd.DataFrame(rows, columns=["", "External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Pathology"]
                 ).to_csv(info, index=False)
    return source, info, subjects


def test_mnms_synthetic_tree(tmp_path: Path) -> None:
    source, info, subjects = _mnms_tree(tmp_path)
    folder = convert_mnms(source, info, tmp_path / "raw", 114, num_workers=1)

    assert folder.name == "Dataset114_MnMs"
    dataset = load_raw_dataset(folder)
    assert dataset.case_ids() == ["A0S9V9_ED", "A0S9V9_ES", "B2C3D4_ED", "B2C3D4_ES"]
    assert dataset.dataset_json.num_training == 4
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["E5F6G7_ED_0000.nii.gz",
                                                                       "E5F6G7_ES_0000.nii.gz"]
    cine, gt, g4, ed, es = subjects["A0S9V9"]
    for phase, t in (("ED", ed), ("ES", es)):
        image, geometry = read_image(folder / "imagesTr" / f"A0S9V9_{phase}_0000.nii.gz")
        label, label_geometry = read_image(folder / "labelsTr" / f"A0S9V9_{phase}.nii.gz")
        assert np.array_equal(image, cine[t]) and np.array_equal(label, gt[t]) and label.any()
        assert geometry.differences(g4.spatial(), tol=1e-6) == [] and label_geometry == geometry
    meta = dataset.metadata
    assert (meta.loc["A0S9V9_ES", "phase"], meta.loc["A0S9V9_ES", "subject"]) == ("ES", "A0S9V9")
    row = meta.loc["B2C3D4_ED", ["vendor_code", "vendor", "centre", "pathology"]]
    assert [str(v) for v in row] == ["B", "Philips", "2", "NOR"]
    assert int(meta.loc["A0S9V9_ES", "frame"]) == es
    assert check_dataset(folder).ok


def test_mnms_column_variants_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "info.csv"
    path.write_text("external_code, vendor name,VENDOR,center,ed,es\nA0S9V9,Siemens,A,1,0,9\n")
    table = read_mnms_info(path)
    assert table.loc[0, ["subject", "vendor", "vendor_code", "centre", "ED", "ES"]].tolist() == [
        "A0S9V9", "Siemens", "A", "1", "0", "9"]
    path.write_text("External code,VendorName,Vendor,Centre,ED\nA0S9V9,Siemens,A,1,0\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) ES.*columns found: \['External code'"):
        read_mnms_info(path)


def test_mnms_reports_wrong_frames_and_unknown_subjects(tmp_path: Path) -> None:
    source, info, subjects = _mnms_tree(tmp_path)
    table = pd.read_csv(info)
    table.loc[table["External code"] == "A0S9V9", "ES"] += 1  # a frame that is not annotated
    table.loc[table["External code"] == "B2C3D4", "ED"] = 40  # beyond the 6 frames
    table = table[table["External code"] != "E5F6G7"]
    table.to_csv(info, index=False)
    with pytest.raises(DatasetError) as err:
        convert_mnms(source, info, tmp_path / "raw", 114, num_workers=1)
    message = str(err.value)
    assert "A0S9V9_sa_gt.nii.gz: ES frame" in message and "no annotation" in message
    assert "B2C3D4_sa.nii.gz: frame indices {'ED': 40} outside the 6 frames" in message
    assert "E5F6G7_sa.nii.gz: subject E5F6G7 is not in" in message
    assert not (tmp_path / "raw" / "Dataset114_MnMs").exists()


def _folder_pairs(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    truth = {}
    for i, (image_name, label_name) in enumerate([("case_a.nii.gz", "case_a_gt.nii.gz"),
                                                  ("case_b_0000.nii.gz", "case_b_seg.nii.gz"),
                                                  ("case_c.nii.gz", "case_c.nii.gz")]):
        case = make_phantom_case(i, fov_mm=100)
        swapped = np.choose(case.label, [0, 3, 2, 1]).astype(np.uint8)  # stored with 1 <-> 3 swapped
        write_image(case.image, case.geometry, images / image_name)
        write_image(swapped, case.geometry, labels / label_name)
        truth[image_name.split(".")[0].removesuffix("_0000")] = case.label
    return images, labels, truth


def test_folder_with_label_map_and_metadata(tmp_path: Path) -> None:
    images, labels, truth = _folder_pairs(tmp_path)
    metadata = tmp_path / "meta.csv"
    metadata.write_text("case_id,subject,phase\ncase_a,s1,ED\ncase_b,s1,ES\nnot_a_case,s9,ED\n")
    folder = convert_folder(images, labels, tmp_path / "raw", 120, short_name="Mine", label_map={"1": 3, "3": 1},
                            metadata_csv=metadata, num_workers=1)
    dataset = load_raw_dataset(folder)
    assert dataset.case_ids() == ["case_a", "case_b", "case_c"]
    for case_id, expected in truth.items():
        label, _ = read_image(folder / "labelsTr" / f"{case_id}.nii.gz")
        assert np.array_equal(label, expected)
    assert dataset.subjects() == {"case_c": ["case_c"], "s1": ["case_a", "case_b"]}
    assert filecmp.cmp(images / "case_b_0000.nii.gz", folder / "imagesTr" / "case_b_0000.nii.gz", shallow=False)

    # Without a map the labels are copied byte-for-byte.
    plain = convert_folder(images, labels, tmp_path / "raw", 121, short_name="Plain", num_workers=1)
    assert filecmp.cmp(labels / "case_a_gt.nii.gz", plain / "labelsTr" / "case_a.nii.gz", shallow=False)
    # Another name under a taken id would make `-d 121` ambiguous, even with --overwrite (same name only)
    with pytest.raises(DatasetError, match="id 121 is taken by Dataset121_Plain"):
        convert_folder(images, labels, tmp_path / "raw", 121, short_name="Other", num_workers=1, overwrite=True)
    assert not (tmp_path / "raw" / "Dataset121_Other").exists()


def test_folder_reports_every_unmatched_file(tmp_path: Path) -> None:
    images, labels, _ = _folder_pairs(tmp_path)
    case = make_phantom_case(7, fov_mm=100)
    write_image(case.image, case.geometry, images / "lonely.nii.gz")
    write_image(case.label, case.geometry, labels / "orphan_label.nii.gz")
    bad = case.label.copy()
    bad[0, 0, 0] = 9
    write_image(bad, case.geometry, labels / "case_a_gt.nii.gz")
    with pytest.raises(DatasetError) as err:
        convert_folder(images, labels, tmp_path / "raw", 120, short_name="Mine", num_workers=1)
    message = str(err.value)
    assert "lonely.nii.gz: no label found" in message
    assert "orphan_label.nii.gz: label without a matching image" in message
    assert "case_a_gt.nii.gz: label values [9]" in message


def test_folder_reports_files_of_another_format_and_refuses_a_one_sided_swap(tmp_path: Path) -> None:
    """p2.nii beside p1.nii.gz files is said, not dropped; {"1": 3} alone would merge LV into RV."""
    images, labels, _ = _folder_pairs(tmp_path)
    case = make_phantom_case(8, fov_mm=100)
    write_image(case.image, case.geometry, images / "other.nii")
    write_image(case.label, case.geometry, labels / "other_gt.nii")
    with pytest.raises(DatasetError) as err:
        convert_folder(images, labels, tmp_path / "raw", 123, short_name="Mine", num_workers=1)
    assert "other.nii: ends in .nii, not .nii.gz: not converted" in str(err.value)
    (images / "other.nii").unlink()
    (labels / "other_gt.nii").unlink()
    with pytest.raises(ConfigurationError, match=r"sends \[1, 3\] all to 3.*map both ways"):
        convert_folder(images, labels, tmp_path / "raw", 124, short_name="Mine", label_map={"1": 3}, num_workers=1)


def test_folder_labels_beside_images(tmp_path: Path) -> None:
    folder_in = tmp_path / "mixed"
    case = make_phantom_case(3, fov_mm=100)
    write_image(case.image, case.geometry, folder_in / "x1.nii.gz")
    write_image(case.label, case.geometry, folder_in / "x1_label.nii.gz")
    out = convert_folder(folder_in, folder_in, tmp_path / "raw", 122, short_name="Mixed", num_workers=1)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    assert (out / "labelsTr" / "x1.nii.gz").is_file()


def test_cli_acdc_and_check(acdc_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "raw"
    assert main(["acdc", str(acdc_subset), "-d", "101", "--raw", str(raw), "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert str(raw / "Dataset101_ACDC") in out and "4 training cases" in out

    assert main(["acdc", str(acdc_subset), "-d", "101", "--raw", str(raw), "-j", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "already exists" in captured.err
    assert "Traceback" not in captured.err

    assert main(["check", "-d", "101", "--raw", str(raw), "-j", "1"]) == 0
    assert "no problems found" in capsys.readouterr().out
    (raw / "Dataset101_ACDC" / "labelsTr" / "patient061_frame01.nii.gz").unlink()
    assert main(["check", "-d", "Dataset101_ACDC", "--raw", str(raw), "-j", "1"]) == 1
    assert "label file missing" in capsys.readouterr().out


def test_cli_folder_with_label_map(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images, labels, truth = _folder_pairs(tmp_path)
    raw = tmp_path / "raw"
    argv = ["folder", "--images", str(images), "--labels", str(labels), "-d", "120", "--name", "Mine",
            "--raw", str(raw), "-j", "1", "--label-map", '{"1": 3, "3": 1}']
    assert main(argv) == 0
    assert "Dataset120_Mine: 3 training cases" in capsys.readouterr().out
    label, _ = read_image(raw / "Dataset120_Mine" / "labelsTr" / "case_a.nii.gz")
    assert np.array_equal(label, truth["case_a"])
    assert main(argv[:-1] + ["{not json"]) == 2
    assert "error: label map" in capsys.readouterr().err


def test_cli_exit_code_1_when_source_files_were_skipped(acdc_subset: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    _break_acdc_subset(acdc_subset)
    raw = tmp_path / "raw"
    assert main(["acdc", str(acdc_subset), "-d", "101", "--raw", str(raw), "-j", "1"]) == 1
    assert "source file(s) skipped, see conversion_skipped.json" in capsys.readouterr().out
    assert (raw / "Dataset101_ACDC" / "dataset.json").is_file()  # what converted is kept


def test_folder_metadata_keyed_by_file_names_is_read_and_unmatched_metadata_refused(tmp_path: Path) -> None:
    images, labels, _ = _folder_pairs(tmp_path)
    keyed = tmp_path / "files.csv"
    keyed.write_text("case_id,subject,phase\ncase_a_0000.nii.gz,s1,ED\ncase_b_0000,s1,ES\n")
    folder = convert_folder(images, labels, tmp_path / "raw", 125, short_name="Mine", metadata_csv=keyed,
                            num_workers=1)
    assert load_raw_dataset(folder).subjects()["s1"] == ["case_a", "case_b"]
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("case_id,subject\nzz1,s1\nzz2,s2\n")
    with pytest.raises(DatasetError, match="none of its case ids"):
        convert_folder(images, labels, tmp_path / "raw", 126, short_name="Mine", metadata_csv=foreign, num_workers=1)


def test_acdc_training_patient_without_any_ground_truth_is_a_problem_not_a_test_patient(tmp_path: Path) -> None:
    from autocmr.dataset.converters.acdc import scan_acdc

    case = make_phantom_case(4, fov_mm=100)
    for split in ("training", "testing"):
        patient = tmp_path / "acdc" / split / ("patient900" if split == "training" else "patient901")
        patient.mkdir(parents=True)
        (patient / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\nHeight: 170\nNbFrame: 2\nWeight: 70\n")
        for frame in (1, 2):
            write_image(case.image, case.geometry, patient / f"{patient.name}_frame{frame:02d}.nii.gz")
    frames, problems = scan_acdc(tmp_path / "acdc")
    assert [f.case_id for f in frames] == ["patient901_frame01", "patient901_frame02"]  # the test patient
    assert sorted(p.file.name for p in problems) == ["patient900_frame01.nii.gz", "patient900_frame02.nii.gz"]


def test_a_conversion_removes_staging_copies_a_killed_one_left_long_ago(tmp_path: Path) -> None:
    import os
    import time

    images, labels, _ = _folder_pairs(tmp_path)
    raw = tmp_path / "raw"
    old, fresh = raw / ".autocmr_staging_old", raw / ".autocmr_staging_now"
    for folder in (old, fresh):
        (folder / "Dataset120_Mine" / "imagesTr").mkdir(parents=True)
    os.utime(old, (time.time() - 2 * 86400,) * 2)  # a conversion killed two days ago
    convert_folder(images, labels, raw, 127, short_name="Mine", num_workers=1)
    assert not old.exists() and fresh.is_dir()  # another conversion may be running right now


def test_folder_metadata_rows_without_a_case_id_or_naming_one_case_twice_are_refused(tmp_path: Path,
                                                                                      capsys) -> None:
    """case_a and case_a_0000.nii.gz are one case: two rows for it would give it two subjects."""
    images, labels, _ = _folder_pairs(tmp_path)
    raw = tmp_path / "raw"
    blank = tmp_path / "blank.csv"
    blank.write_text("case_id,subject,phase\ncase_a,s1,ED\ncase_b,s1,ES\n,s1,\n")
    twice = tmp_path / "twice.csv"
    twice.write_text("case_id,subject,phase\ncase_a,s1,ED\ncase_b,s1,ES\ncase_a_0000.nii.gz,s9,ED\n")
    for metadata, words in ((blank, "row(s) [4] have no case_id"),
                            (twice, "rows [2, 4] are all for case case_a (written ['case_a', 'case_a_0000.nii.gz'])")):
        with pytest.raises(DatasetError) as info:
            convert_folder(images, labels, raw, 128, short_name="Mine", metadata_csv=metadata, num_workers=1)
        assert str(info.value).startswith(f"{metadata}: {words}")
        argv = ["folder", "--images", str(images), "--labels", str(labels), "-d", "128", "--name", "Mine",
                "--raw", str(raw), "--metadata", str(metadata), "-j", "1"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
        assert not (raw / "Dataset128_Mine").exists()


def test_the_renumbering_that_a_gapped_dataset_json_suggests_works(tmp_path: Path, capsys) -> None:
    """A dataset numbered 0, 1, 2, 4 is refused with a --label-map hint; the command it suggests converts it."""
    import re

    folder = write_phantom_dataset(tmp_path / "other", n_subjects=1, seed=6, fov_mm=100)
    for label_file in (folder / "labelsTr").iterdir():
        label, geometry = read_image(label_file)
        write_image(np.where(label == 3, 4, label).astype(np.uint8), geometry, label_file)
    data = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**data, "labels": {"background": 0, "LV": 1, "MYO": 2,
                                                                        "RV": 4}}))
    with pytest.raises(DatasetError, match="renumber them") as info:
        DatasetJson.load(folder / "dataset.json")
    suggested = re.search(r"autocmr_convert folder --label-map '(\{.*?\})'", str(info.value)).group(1)

    raw = tmp_path / "raw"
    assert main(["folder", "--images", str(folder / "imagesTr"), "--labels", str(folder / "labelsTr"), "-d", "129",
                 "--name", "Renumbered", "--raw", str(raw), "-j", "1", "--label-map", suggested]) == 0
    out = raw / "Dataset129_Renumbered"
    for case_id in ("subject000_ED", "subject000_ES"):
        before, _ = read_image(folder / "labelsTr" / f"{case_id}.nii.gz")
        after, _ = read_image(out / "labelsTr" / f"{case_id}.nii.gz")
        assert (before == 4).any() and np.array_equal(after, np.where(before == 4, 3, before))
    assert check_dataset(out).ok


def _synthetic_acdc_patient(parent: Path, number: int, *, ground_truth: bool = True) -> Path:
    """patientNNN with Info.cfg and frames 1 (ED) and 2 (ES): phantom images, labels in ACDC's values."""
    patient = parent / f"patient{number:03d}"
    patient.mkdir(parents=True)
    (patient / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\nHeight: 170\nNbFrame: 2\nWeight: 70\n")
    for frame in (1, 2):
        case = make_phantom_case(number * 10 + frame, phase=frame - 1.0, fov_mm=100)
        write_image(case.image, case.geometry, patient / f"{patient.name}_frame{frame:02d}.nii.gz")
        if ground_truth:
            write_image(case.label, case.geometry, patient / f"{patient.name}_frame{frame:02d}_gt.nii.gz")
    return patient


def test_acdc_testing_patients_with_ground_truth_stay_test_patients(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The later ACDC releases ship testing/ with _gt files: those patients are the test set, not training data."""
    release = tmp_path / "ACDC" / "database"
    _synthetic_acdc_patient(release / "training", 1)
    _synthetic_acdc_patient(release / "testing", 101)
    raw = tmp_path / "raw"

    with caplog.at_level("INFO", logger="autocmr.dataset.converters.acdc"):
        folder = convert_acdc(release, raw, 101, num_workers=1)

    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["patient001_frame01_0000.nii.gz",
                                                                       "patient001_frame02_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["patient001_frame01.nii.gz",
                                                                       "patient001_frame02.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["patient101_frame01_0000.nii.gz",
                                                                       "patient101_frame02_0000.nii.gz"]
    assert not (folder / "labelsTs").exists()  # the raw format has no test labels
    assert DatasetJson.load(folder / "dataset.json").num_training == 2
    assert "1 patient(s) under testing/ (patient101 ...) go to imagesTs; their _gt files are not used" in caplog.text
    assert check_dataset(folder).ok and not (folder / "conversion_skipped.json").exists()

    # a flat folder keeps its rule: the patient without any ground truth is the test patient
    flat = tmp_path / "flat"
    _synthetic_acdc_patient(flat, 2)
    _synthetic_acdc_patient(flat, 3, ground_truth=False)
    folder = convert_acdc(flat, raw, 102, short_name="Flat", num_workers=1)
    assert DatasetJson.load(folder / "dataset.json").num_training == 2
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["patient003_frame01_0000.nii.gz",
                                                                       "patient003_frame02_0000.nii.gz"]


def test_acdc_frames_failing_with_one_unexpected_error_are_all_dropped(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed pool fails every pending frame with the same message: none of them may stay in dataset.json or
    cases.csv without its files."""
    from autocmr.dataset.converters import acdc

    source = tmp_path / "acdc"
    for number in range(1, 7):
        _synthetic_acdc_patient(source, number)
    convert_frame = acdc._convert_frame

    def crashing(image: Path, label: Path | None, folder: Path, case_id: str) -> list:
        if case_id >= "patient003":
            raise RuntimeError("A process in the process pool was terminated abruptly")
        return convert_frame(image, label, folder, case_id)

    monkeypatch.setattr(acdc, "_convert_frame", crashing)
    folder = convert_acdc(source, tmp_path / "raw", 101, num_workers=1)

    images = sorted(p.name for p in (folder / "imagesTr").iterdir())
    assert images == [f"patient00{n}_frame0{f}_0000.nii.gz" for n in (1, 2) for f in (1, 2)]
    assert DatasetJson.load(folder / "dataset.json").num_training == len(images) == len(pd.read_csv(
        folder / "cases.csv"))
    skipped = json.loads((folder / "conversion_skipped.json").read_text())
    assert sorted(Path(s["file"]).name for s in skipped["skipped"]) == [
        f"patient00{n}_frame0{f}.nii.gz" for n in range(3, 7) for f in (1, 2)]
    assert all("terminated abruptly" in s["reason"] for s in skipped["skipped"])
    assert skipped["converted_cases"] == 4 and check_dataset(folder).ok


def test_folder_conversion_of_acdc_files_warns_that_their_labels_are_swapped(tmp_path: Path, caplog) -> None:
    """An ACDC patient folder given to the generic converter: its _gt files are 1 RV, 3 LV, and converted
    without --label-map the model would learn LV and RV swapped; the converter says so."""
    import logging

    folder = tmp_path / "patient001"
    case = make_phantom_case(0, fov_mm=100)
    write_image(case.image, case.geometry, folder / "patient001_frame01.nii.gz")
    write_image(case.label, case.geometry, folder / "patient001_frame01_gt.nii.gz")
    with caplog.at_level(logging.WARNING, logger="autocmr.dataset.converters.generic"):
        convert_folder(folder, folder, tmp_path / "raw", 121, short_name="Same", num_workers=1)
    assert "ACDC's own files use 1 RV, 2 MYO, 3 LV" in caplog.text and "patient001_frame01_gt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autocmr.dataset.converters.generic"):
        convert_folder(folder, folder, tmp_path / "raw2", 122, short_name="Mapped", num_workers=1,
                       label_map={"1": 3, "3": 1})
    assert "ACDC's own files" not in caplog.text
