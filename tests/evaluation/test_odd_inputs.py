"""autocmr_evaluate on odd inputs a user brings: what must never crash, drop cases or clobber files silently."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autocmr.cli.evaluate import main
from autocmr.errors import ConfigurationError
from autocmr.evaluation import evaluate_folders
from autocmr.evaluation.clinical import normalise_phase
from autocmr.io.image import Geometry, write_image
from autocmr.testing.phantoms import make_phantom_subject


def _subject(ref: Path, pred: Path, name: str, seed: int, *, ending: str = ".nii.gz") -> None:
    for phase, case in make_phantom_subject(seed, fov_mm=100.0).items():
        write_image(case.label, case.geometry, ref / f"{name}_{phase}{ending}")
        write_image(case.label, case.geometry, pred / f"{name}_{phase}{ending}")


def test_phase_names_are_normalised():
    assert [normalise_phase(v) for v in ("ed", " Es ", "End-Diastole", "end_systole", "SYSTOLE", "mid", None)] == \
        ["ED", "ES", "ED", "ES", "ES", "mid", None]


def test_phase_synonyms_count_and_an_empty_reference_is_not_a_reference_value(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _subject(ref, pred, "a", 1)
    _subject(ref, pred, "b", 2)
    case = make_phantom_subject(2, fov_mm=100.0)["ES"]
    write_image(np.where(case.label == 1, 0, case.label), case.geometry, ref / "b_ES.nii.gz")  # no LV at ES
    rows = [{"case_id": f"{s}_{p}", "subject": s, "phase": name}
            for s in ("a", "b") for p, name in (("ED", "diastole"), ("ES", "Es"))]
    meta = tmp_path / "meta.csv"
    pd.DataFrame(rows).to_csv(meta, index=False)
    result = evaluate_folders(ref, pred, tmp_path / "out", metadata=meta, make_plots=False)
    clinical = pd.read_csv(tmp_path / "out" / "clinical.csv").set_index("subject")
    assert set(clinical.index) == {"a", "b"}  # 'diastole' and 'Es' are ED and ES
    assert math.isnan(clinical.at["b", "ref_LVEF"]) and "LV at ES" in clinical.at["b", "note"]
    assert clinical.at["b", "ref_RVEF"] == pytest.approx(clinical.at["b", "pred_RVEF"])  # RV still scored
    assert result.summary["clinical"]["agreement"]["LVEF"]["n"] == 1


def test_results_never_overwrite_the_case_table_being_read(tmp_path, capsys):
    root = tmp_path / "Dataset"
    _subject(root / "labelsTr", tmp_path / "pred", "a", 3)
    table = "case_id,subject,phase\na_ED,a,ED\na_ES,a,ES\n"
    (root / "cases.csv").write_text(table)
    with pytest.raises(ConfigurationError, match="would overwrite the case table"):
        evaluate_folders(root / "labelsTr", tmp_path / "pred", root, make_plots=False)
    assert main(["-ref", str(root / "labelsTr"), "-pred", str(tmp_path / "pred"), "-o", str(root)]) == 2
    assert "would overwrite the case table" in capsys.readouterr().err
    assert (root / "cases.csv").read_text() == table


def test_an_empty_case_table_is_an_error_naming_it(tmp_path, capsys):
    _subject(tmp_path / "ref", tmp_path / "pred", "a", 4)
    (tmp_path / "empty.csv").write_text("")
    code = main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "out"),
                 "-meta", str(tmp_path / "empty.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "empty.csv: cannot read the metadata table" in err and "Traceback" not in err


def test_a_2d_image_is_evaluated_and_left_out_of_the_slice_positions(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _subject(ref, pred, "a", 5)
    flat = np.zeros((20, 24), np.uint8)
    flat[5:12, 6:14] = 1
    geometry = Geometry((24, 20), (1.5, 1.5), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    for folder in (ref, pred):
        write_image(flat, geometry, folder / "flat.nii.gz")
    result = evaluate_folders(ref, pred, tmp_path / "out", by=["slice_position"], make_plots=False)
    assert not result.failures and "flat" in set(result.cases["case_id"])
    flat_rows = result.cases[result.cases["case_id"] == "flat"]
    assert flat_rows["dice"].notna().all()
    assert flat_rows["vol_ref_ml"].isna().all()  # a pixel area is no volume: not mm^2 / 1000 called mL
    notes = result.summary["slice_position"]["cases_without_breakdown"]
    assert "no slice positions" in notes["flat"]  # said in the breakdown, not only in a log line


def test_acdc_named_references_and_other_endings_are_pointed_out(tmp_path, caplog):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    case = make_phantom_subject(6, fov_mm=100.0)["ED"]
    write_image(case.label, case.geometry, ref / "patient001_frame01_gt.nii.gz")
    write_image(case.label, case.geometry, pred / "patient001_frame01.nii.gz")
    write_image(case.label, case.geometry, ref / "patient002_frame01_gt.nii.gz")
    write_image(case.label, case.geometry, pred / "patient002_frame01.nii")
    with caplog.at_level(logging.WARNING):
        result = evaluate_folders(ref, pred, tmp_path / "out", make_plots=False)
    assert "ACDC's own files use 1 RV, 2 MYO, 3 LV" in caplog.text
    (missing,) = result.failures
    assert "there is patient002_frame01.nii" in missing.reason and "PosixPath" not in missing.reason


def test_an_acdc_patient_folder_as_reference_scores_the_gt_file_not_the_image(tmp_path):
    """patientNNN/ holds patientNNN_frameXX.nii.gz (the image) beside patientNNN_frameXX_gt.nii.gz: both give
    the case id patientNNN_frameXX, and the image must not be scored as a second reference."""
    from autocmr.evaluation.cases import match_files

    ref, pred = tmp_path / "patient001", tmp_path / "pred"
    case = make_phantom_subject(6, fov_mm=100.0)["ED"]
    write_image(case.image, case.geometry, ref / "patient001_frame01.nii.gz")
    write_image(case.label, case.geometry, ref / "patient001_frame01_gt.nii.gz")
    write_image(case.label, case.geometry, pred / "patient001_frame01.nii.gz")
    pairs, missing, unused = match_files(ref, pred, ".nii.gz")
    assert [(p.case_id, p.reference.name) for p in pairs] == [("patient001_frame01", "patient001_frame01_gt.nii.gz")]
    assert missing == [] and unused == []


def test_a_breakdown_by_a_column_named_like_a_result_column_is_refused(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _subject(ref, pred, "a", 4)
    (tmp_path / "cases.csv").write_text("case_id,frame\na_ED,1\na_ES,12\n")  # ACDC's cases.csv has a frame column
    code = main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "out"), "-meta",
                 str(tmp_path / "cases.csv"), "--by", "frame"])
    assert code == 2 and "share a name with the results' own columns" in capsys.readouterr().err


def test_a_truncated_prediction_is_a_failed_pair_not_a_zero_filled_score(tmp_path):
    """ITK reads a NIfTI cut short (an interrupted copy) with zeros for the missing voxels: scored, it gave a
    silently wrong Dice; now the pair fails naming the file."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _subject(ref, pred, "a", 5, ending=".nii")
    cut = pred / "a_ED.nii"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    result = evaluate_folders(ref, pred, tmp_path / "out", make_plots=False, file_ending=".nii")
    (failure,) = result.failures
    assert failure.file == str(cut) and "truncated" in failure.reason
    assert "a_ES" in set(result.cases["case_id"]) and "a_ED" not in set(result.cases["case_id"])
