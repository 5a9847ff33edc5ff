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


def test_ed_es_files_of_a_subject_with_a_cine_are_paired_beside_it():
    cases = [_case("patient001", n_frames=20), _case("patient001_ED"), _case("patient001_ES")]
    subjects = {s.name: s for s in group_subjects(cases)}
    assert set(subjects) == {"patient001", "patient001@3d"}
    pair = subjects["patient001@3d"]
    assert [c.name for p in ("ED", "ES") for c in pair.phases[p]] == ["patient001_ED", "patient001_ES"]
    assert pair.notes == [] and subjects["patient001"].cine is not None
    # the same when cases.csv names them (the 3D files sorting before the cine changes nothing)
    table = pd.DataFrame({"case_id": ["a_cine", "0_ed", "0_es"], "subject": ["P1"] * 3,
                          "phase": ["", "ED", "ES"]}).set_index("case_id")
    subjects = {s.name: s for s in group_subjects([_case("a_cine", n_frames=20), _case("0_ed"), _case("0_es")],
                                                  table)}
    assert set(subjects) == {"P1", "P1@3d"} and subjects["P1"].cine is not None
    assert set(subjects["P1@3d"].phases) == {"ED", "ES"}


def test_files_of_unknown_phase_stay_subjects_of_their_own():
    table = pd.DataFrame({"case_id": ["x", "y", "z_ed"], "subject": ["P2", "P2", "P2"],
                          "phase": ["", "mid", "ED"]}).set_index("case_id")
    subjects = {s.name: s for s in group_subjects([_case("x"), _case("y"), _case("z_ed")], table)}
    assert set(subjects) == {"P2", "P2@x", "P2@y"}
    assert [c.name for c in subjects["P2@x"].unphased] == ["x"] and "phase unknown" in subjects["P2@x"].notes[0]
    assert subjects["P2"].phases["ED"][0].name == "z_ed" and not subjects["P2"].unphased


def test_an_ambiguous_lone_phase_promises_no_measures():
    (subject,) = group_subjects([_case("p_ED"), _case("p-ED")])
    assert subject.notes == ["several ED cases (p-ED, p_ED): measures needing ED not computed", "no ES case"]


def test_phase_pairs_pair_one_ed_with_one_es_by_the_grouping_rules():
    from autocmr.analysis.subjects import phase_pairs

    metadata = pd.DataFrame({"subject": ["p7", "p7"], "phase": ["ED", "ES"]},
                            index=pd.Index(["scan_a", "scan_b"], name="case_id"))
    cases = [(name, (Path(f"/in/{name}.nii.gz"),)) for name in
             ("anna_ED", "anna_ES", "bob_ED", "bob_ES", "bob_es", "carl", "scan_a", "scan_b")]
    assert phase_pairs(cases, metadata) == {"anna_ED": "anna_ES", "anna_ES": "anna_ED",
                                            "scan_a": "scan_b", "scan_b": "scan_a"}  # bob: two ES, carl: no phase


def test_stray_spaces_in_cases_csv_do_not_split_a_patient(tmp_path):
    from autocmr.analysis.subjects import read_metadata
    from autocmr.evaluation.clinical import subject_and_phase

    (tmp_path / "cases.csv").write_text("case_id,subject,phase\nP1_a ,P1 ,ED\nP1_b,P1,ES\n")
    table = read_metadata(tmp_path / "cases.csv")
    assert subject_and_phase("P1_a", table) == ("P1", "ED") and subject_and_phase("P1_b", table) == ("P1", "ES")


def test_a_case_table_phase_that_is_neither_ed_nor_es_is_named_in_a_warning(tmp_path, caplog):
    """A typo in the phase column ("XX" for ES) pairs nothing: said, naming the file, the case and the value."""
    import logging

    from autocmr.analysis.subjects import read_metadata
    from autocmr.evaluation.cases import load_metadata

    table = tmp_path / "cases.csv"
    table.write_text("case_id,subject,phase\np1_a,p1,diastole\np1_b,p1,XX\n")
    with caplog.at_level(logging.WARNING):
        read_metadata(table)
    assert "1 row(s) give a phase that is neither ED nor ES (p1_b: 'XX')" in caplog.text and str(table) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_metadata(table)
    assert "p1_b: 'XX'" in caplog.text
