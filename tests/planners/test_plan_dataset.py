"""autocmr_plan end to end on phantoms and on real ACDC cases."""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from autocmr.cli.plan import main as plan_main
from autocmr.dataset.converters import convert_acdc
from autocmr.errors import DatasetError
from autocmr.planners.plan_dataset import plan_dataset
from autocmr.planners.plans import Plans
from autocmr.preprocessing import storage
from autocmr.settings import resolve_roots
from autocmr.testing.phantoms import write_phantom_dataset


@pytest.fixture()
def roots(tmp_path):
    return resolve_roots(raw=tmp_path / "raw", preprocessed=tmp_path / "pre", results=tmp_path / "res")


def test_plan_writes_plans_fingerprint_and_skips_up_to_date_cases(roots):
    write_phantom_dataset(roots.raw, n_subjects=3, dataset_id=950, fov_mm=120, reorient=True)
    first = plan_dataset(950, roots, num_workers=1)
    assert set(p.name for p in first.plans_files) == {"autocmrPlans.json", "autocmrPlans_cpu.json"}
    assert sum(first.preprocessed.values()) == 12  # 6 cases x (2d, 3d_fullres); cpu plans share the data
    fingerprint = json.loads((first.dataset_folder / "fingerprint.json").read_text())
    assert len(fingerprint["cases"]) == 6 and fingerprint["cases"][0]["spacing"][0] > 5
    second = plan_dataset(950, roots, num_workers=1)
    assert sum(second.preprocessed.values()) == 0 and sum(second.skipped.values()) == 12
    plans = Plans.load(first.dataset_folder / "autocmrPlans.json")
    folder = first.dataset_folder / plans.configuration("2d").data_identifier
    props = storage.load_properties(folder, "subject000_ED")
    data, seg = storage.load_arrays(folder, "subject000_ED")
    assert data.dtype == np.float32 and seg.shape[1:] == data.shape[1:]
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert abs(float(data.mean())) < 0.2 and abs(float(data.std()) - 1) < 0.2  # z-scored
    assert props["target_spacing"][1:] == pytest.approx(plans.configuration("2d").spacing[1:])


def test_interrupted_run_is_completed_by_rerun(roots):
    folder = write_phantom_dataset(roots.raw, n_subjects=3, dataset_id=951, fov_mm=120)
    result = plan_dataset(951, roots, num_workers=1, configurations=("2d",))
    plans = Plans.load(result.dataset_folder / "autocmrPlans.json")
    data_dir = result.dataset_folder / plans.configuration("2d").data_identifier
    # simulate a crash: one case's properties never written, a stale temporary file left behind
    (data_dir / "subject001_ES.json").unlink()
    stale, live = data_dir / ".tmp_abc_subject002_ED.b2nd", data_dir / ".tmp_def_subject002_ES.b2nd"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200,) * 2)  # untouched for two hours: nobody writes it any more
    live.write_bytes(b"another fold preprocessing this folder right now")
    again = plan_dataset(951, roots, num_workers=1, configurations=("2d",))
    assert again.preprocessed[plans.configuration("2d").data_identifier] == 1
    assert list(data_dir.glob(".tmp_*")) == [live]
    assert len(storage.list_cases(data_dir)) == 6
    assert folder.is_dir()


def test_broken_dataset_is_refused_before_planning(roots):
    folder = write_phantom_dataset(roots.raw, n_subjects=2, dataset_id=952, fov_mm=120)
    (folder / "labelsTr" / "subject000_ED.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DatasetError, match="subject000_ED"):
        plan_dataset(952, roots, num_workers=1)
    assert not (roots.preprocessed / folder.name / "autocmrPlans.json").exists()


def test_real_acdc_cases_convert_and_plan(acdc_root, tmp_path, roots):
    source = tmp_path / "acdc"
    for p in ("patient001", "patient021", "patient041", "patient061", "patient081"):
        shutil.copytree(acdc_root / p, source / p)
    convert_acdc(source, roots.raw, 101, num_workers=1)
    code = plan_main(["-d", "101", "-j", "1", "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed),
                      "-c", "2d"])
    assert code == 0
    plans = Plans.load(roots.preprocessed / "Dataset101_ACDC" / "autocmrPlans.json")
    fp = json.loads((roots.preprocessed / "Dataset101_ACDC" / "fingerprint.json").read_text())
    inplane = np.median([c["spacing"][1] for c in fp["cases"]])
    assert plans.configuration("2d").spacing[1] == pytest.approx(inplane)
    assert 1.2 <= inplane <= 2.0
    c3 = plans.configuration("3d_fullres")
    assert c3.spacing[0] > 2 * c3.spacing[1]


def test_cases_removed_from_the_raw_dataset_are_removed_from_the_stored_data(roots):
    folder = write_phantom_dataset(roots.raw, n_subjects=3, dataset_id=952, fov_mm=120)
    result = plan_dataset(952, roots, num_workers=1, configurations=("2d",))
    data_dir = result.dataset_folder / Plans.load(result.dataset_folder / "autocmrPlans.json").configuration(
        "2d").data_identifier
    assert "subject002_ES" in storage.list_cases(data_dir)
    for sub in ("imagesTr", "labelsTr"):  # converted again without subject002's ES
        for f in (folder / sub).glob("subject002_ES*"):
            f.unlink()
    dataset_json = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": 5}))
    plan_dataset(952, roots, num_workers=1, configurations=("2d",), check=False)
    assert "subject002_ES" not in storage.list_cases(data_dir) and len(storage.list_cases(data_dir)) == 5


def test_case_ids_whose_stored_files_would_collide_are_refused_before_preprocessing(roots):
    folder = write_phantom_dataset(roots.raw, n_subjects=1, dataset_id=953, fov_mm=120)
    for sub, name in (("imagesTr", "subject000_ED_0000.nii.gz"), ("labelsTr", "subject000_ED.nii.gz")):
        source = folder / sub / name
        (folder / sub / name.replace("subject000_ED", "subject000_ED_locs")).write_bytes(source.read_bytes())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": 3}))
    with pytest.raises(DatasetError, match="subject000_ED and subject000_ED_locs cannot be stored side by side"):
        plan_dataset(953, roots, num_workers=1, configurations=("2d",), check=False)


def test_an_unreadable_cases_csv_is_a_dataset_error_naming_it(roots, capsys):
    """A cases.csv saved by Excel in Latin-1 ("Besançon") is the dataset's problem, with or without the check."""
    folder = write_phantom_dataset(roots.raw, n_subjects=1, dataset_id=953, fov_mm=120)
    (folder / "cases.csv").write_bytes("case_id,subject,centre\nsubject000_ED,subject000,Besan\xe7on\n"
                                       .encode("latin-1"))
    for check in (True, False):
        with pytest.raises(DatasetError, match=r"cases\.csv:? +cannot read as CSV"):
            plan_dataset(953, roots, num_workers=1, check=check, preprocess=False)
    argv = ["-d", "953", "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--plan-only", "-j", "1"]
    assert plan_main(argv) == 2
    err = capsys.readouterr().err
    assert "cases.csv" in err and "Traceback" not in err


def test_plan_shows_the_integrity_warnings_and_drops_a_cases_csv_the_raw_data_no_longer_has(roots, caplog):
    """A cases.csv row naming no case means that case's subject comes from its name: the planner says so in
    full. A conversion again without metadata leaves no cases.csv: the preprocessed copy of the old one must
    not go on deciding subjects and folds."""
    import logging

    folder = write_phantom_dataset(roots.raw, n_subjects=1, dataset_id=954, fov_mm=120)
    with open(folder / "cases.csv", "a", encoding="utf-8") as f:
        f.write("subject000_ED_0000.nii.gz,subject000,ED,phantom,synthetic\n")
    with caplog.at_level(logging.WARNING, logger="autocmr.planners.plan_dataset"):
        result = plan_dataset(954, roots, num_workers=1, preprocess=False)
    assert "subject000_ED_0000.nii.gz" in caplog.text and "not in imagesTr" in caplog.text
    assert (result.dataset_folder / "cases.csv").is_file()
    (folder / "cases.csv").unlink()
    plan_dataset(954, roots, num_workers=1, preprocess=False)
    assert not (result.dataset_folder / "cases.csv").exists()


def test_a_case_named_like_the_data_folders_own_file_is_refused(roots):
    from autocmr.dataset.integrity import check_dataset

    folder = write_phantom_dataset(roots.raw, n_subjects=1, dataset_id=955, fov_mm=120)
    for sub, name in (("imagesTr", "subject000_ED_0000.nii.gz"), ("labelsTr", "subject000_ED.nii.gz")):
        (folder / sub / name).rename(folder / sub / name.replace("subject000_ED", "configuration"))
    assert any("'configuration' is reserved" in p.reason for p in check_dataset(folder).errors)
    with pytest.raises(DatasetError, match="'configuration' is reserved"):
        plan_dataset(955, roots, num_workers=1, configurations=("2d",), check=False)


def test_a_configuration_the_plans_do_not_have_is_named_not_passed_over(roots, caplog):
    """-c 3d_fullres on single-slice data (no 3D plan): nothing to preprocess for it, and the planner says so."""
    import logging

    write_phantom_dataset(roots.raw, n_subjects=1, dataset_id=956, fov_mm=120)
    with caplog.at_level(logging.WARNING, logger="autocmr.planners.plan_dataset"):
        plan_dataset(956, roots, num_workers=1, configurations=("2d", "3d_lowres"))
    assert "configuration '3d_lowres' was not planned" in caplog.text


def test_a_truncated_image_is_never_preprocessed_into_training_data(roots):
    """--no-check skips the integrity check, not the reader's: a gzip cut short (a copy that stopped) is
    refused naming the file, as prediction and the check refuse it, instead of zeros for what is missing."""
    folder = write_phantom_dataset(roots.raw, n_subjects=1, dataset_id=957, fov_mm=120)
    image = folder / "imagesTr" / "subject000_ED_0000.nii.gz"
    image.write_bytes(image.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="subject000_ED"):
        plan_dataset(957, roots, num_workers=1, configurations=("2d",), check=False)
