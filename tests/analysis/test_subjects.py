"""Grouping predicted cases into subjects: cases.csv, _ED/_ES names, ACDC _frameNN + Info.cfg, cines."""
from pathlib import Path

import pandas as pd

from autocmr.analysis.subjects import CaseRecord, find_metadata, group_subjects, read_metadata


def _case(name: str, folder: Path = Path("/in"), n_frames: int = 1) -> CaseRecord:
    return CaseRecord(name, Path("/out") / f"{name}.nii.gz", folder / f"{name}.nii.gz",
                      (folder / f"{name}.nii.gz",), n_frames)


def test_names_pair_ed_and_es_and_cines_stand_alone():
    subjects = {s.name: s for s in group_subjects([_case("p1_ED"), _case("p1-es"), _case("p2_ED"),
                                                   _case("cine7", n_frames=20), _case("scan")])}
    assert set(subjects) == {"p1", "p2", "cine7", "scan"}
    assert [c.name for c in subjects["p1"].phases["ES"]] == ["p1-es"] and subjects["p1"].notes == []
    assert subjects["p1"].grouped_by == "name (_ED/_ES)"
    assert "no ES case" in subjects["p2"].notes[0]
    assert subjects["cine7"].cine is not None and subjects["cine7"].grouped_by == "cine"
    assert subjects["scan"].unphased and "phase unknown" in subjects["scan"].notes[0]


def test_cases_csv_overrides_names(tmp_path):
    (tmp_path / "images").mkdir()
    pd.DataFrame({"case_id": ["a", "b", "c"], "subject": ["P", "P", "Q"], "phase": ["ES", "ed", "ED"]}).to_csv(
        tmp_path / "cases.csv", index=False)
    found = find_metadata(tmp_path / "images")
    assert found == tmp_path / "cases.csv"
    subjects = {s.name: s for s in group_subjects([_case("a"), _case("b"), _case("c")], read_metadata(found))}
    assert subjects["P"].phases["ED"][0].name == "b" and subjects["P"].phases["ES"][0].name == "a"
    assert subjects["P"].grouped_by == "cases.csv"
    assert "Q" in subjects and "no ES case" in subjects["Q"].notes[0]


def test_acdc_frame_names_with_info_cfg(tmp_path):
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\nNbFrame: 30\n")
    cases = [_case("patient001_frame01", tmp_path), _case("patient001_frame12", tmp_path),
             _case("patient001_frame05", tmp_path)]
    subjects = {s.name: s for s in group_subjects(cases)}
    subject = subjects["patient001"]
    assert subject.phases["ED"][0].name == "patient001_frame01" and subject.frame_numbers == {"ED": 1, "ES": 12}
    assert "patient001_frame05" in subjects  # neither ED nor ES: a case of its own


def test_duplicate_phases_are_noted_not_guessed():
    subjects = group_subjects([_case("p_ED"), _case("p-ED"), _case("p_ES")])
    assert "several ED cases" in subjects[0].notes[0]
