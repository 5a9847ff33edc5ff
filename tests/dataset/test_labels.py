"""The values a label map holds (:func:`autocmr.dataset.labels.label_values`), as the converters and the
integrity check read them, and the remapping of public datasets' conventions."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.dataset.labels import ACDC_TO_AUTOCMR, LV, MYO, RV, label_values, remap_labels
from autocmr.errors import InputFileError


def test_label_values_of_unsigned_signed_and_integral_float_maps():
    label = np.array([[0, 3, 3], [2, 0, 0]])
    assert label_values(label.astype(np.uint8), "x.nii.gz") == [0, 2, 3]
    assert label_values(label.astype(np.int16) - 1, "x.nii.gz") == [-1, 1, 2]  # signed: no bincount shortcut
    assert label_values(label.astype(np.float32), "x.nii.gz") == [0, 2, 3]  # whole numbers stored as float


@pytest.mark.parametrize("bad", [1.5, np.nan, np.inf])
def test_non_integer_label_values_name_the_file(bad):
    label = np.array([0.0, 1.0, bad], dtype=np.float32)
    with pytest.raises(InputFileError, match="non-integer label values") as info:
        label_values(label, "case_003.nii.gz")
    assert str(info.value.path) == "case_003.nii.gz"


def test_remap_acdc_to_autocmr_and_refuse_unknown_values():
    acdc = np.array([0, 1, 2, 3], dtype=np.uint8)  # background, RV, myocardium, LV cavity
    assert remap_labels(acdc, ACDC_TO_AUTOCMR).tolist() == [0, RV, MYO, LV]
    with pytest.raises(ValueError, match=r"\[7\]"):
        remap_labels(np.array([0, 7]), ACDC_TO_AUTOCMR)


@pytest.mark.parametrize("labels", [{"background": 0, "LV": 1, "RV": 3}, {"background": 0, "LV": 1, "RV": 1},
                                    {"ignore": -1, "background": 0, "LV": 1}])
def test_dataset_json_labels_must_be_0_to_n_without_gaps_or_repeats(labels):
    """The network has one output per label, trained with the label value as the class index: a gap, a repeat
    or a negative value would crash training at its first step or train a class that never appears."""
    from autocmr.dataset.raw import DatasetJson
    from autocmr.errors import DatasetError

    document = {"channel_names": {"0": "cineMRI"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    with pytest.raises(DatasetError, match=r"dataset.json: label values must be 0, 1, \.\.\., 2 .*renumber"):
        DatasetJson.from_dict(document)
    fine = dict(document, labels={"background": 0, "LV": 1, "MYO": 2, "RV": 3})
    assert DatasetJson.from_dict(fine).labels["RV"] == 3


def test_without_cases_csv_a_patients_phases_share_a_subject(tmp_path):
    """Folds are dealt per subject: without a cases.csv, P1_ED and P1_ES (and ACDC's frames) must still be one
    subject, or one patient's ED could train a model validated on its ES."""
    from autocmr.dataset.raw import load_metadata

    table = load_metadata(tmp_path, ["p1_ED", "p1_ES", "p2-ed", "patient003_frame01", "q"])
    assert table["subject"].tolist() == ["p1", "p1", "p2", "patient003", "q"]


def test_a_long_label_map_is_read_as_json_not_taken_for_a_file_name():
    import json

    from autocmr.dataset.converters.generic import parse_label_map

    mapping = {str(k): k % 4 for k in range(40)}  # longer than a file name may be
    assert parse_label_map(json.dumps(mapping)) == {k: k % 4 for k in range(40)}


def test_a_spreadsheets_cases_csv_header_is_read_as_meant(tmp_path):
    """`case_id, Subject` (a space after the comma, a capital): read as written, the subject column would be
    missed and A1/A2, one patient's two phases, could fall in different folds without a word."""
    from autocmr.dataset.integrity import _check_cases_csv
    from autocmr.dataset.raw import load_metadata

    (tmp_path / "cases.csv").write_text("case_id, Subject , phase,Centre\nA1, S1, ED,x\nA2,S1 ,ES, y\n")
    table = load_metadata(tmp_path, ["A1", "A2"])
    assert table["subject"].tolist() == ["S1", "S1"] and table["phase"].tolist() == ["ED", "ES"]
    assert "Centre" in table.columns  # other columns keep their names
    (tmp_path / "cases.csv").write_text("case_id, subject\nA1,S1\nA1,S2\n")
    problems = _check_cases_csv(tmp_path / "cases.csv", {"A1"})
    assert "several subjects ['S1', 'S2']" in problems[0].reason


def test_a_label_map_file_that_does_not_exist_is_said_to_be_missing(tmp_path):
    from autocmr.dataset.converters.generic import parse_label_map
    from autocmr.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"label map file .*missing_map.json not found"):
        parse_label_map(str(tmp_path / "missing_map.json"))
