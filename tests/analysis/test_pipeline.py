"""The analysis of a folder of masks: tables, figures and report, ED/ES of phantom cines, failures kept."""
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from autocmr.analysis.measures import FrameMask
from autocmr.analysis.pipeline import analyse_cases, analyse_masks
from autocmr.analysis.qc import QcThresholds
from autocmr.analysis.subjects import CaseRecord
from autocmr.inference.inputs import CaseFailure
from autocmr.io.atomic import TEMP_PREFIX
from autocmr.io.cine import write_cine
from autocmr.io.image import write_image
from autocmr.io.orientation import to_canonical
from autocmr.testing.phantoms import make_phantom_cine, make_phantom_subject


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """Exact phantom masks standing in for predictions: two cines, one ED/ES pair, one lone ED, one failure."""
    folder = tmp_path_factory.mktemp("analysis")
    cases, known = [], {}
    for name, seed, n_frames in (("cineA", 1, 9), ("cineB", 2, 14)):
        image, label, geometry, ed, es = make_phantom_cine(seed, n_frames=n_frames, fov_mm=160.0)
        roll = 3 if name == "cineB" else 0  # the cycle need not start at ED
        image, label = np.roll(image, -roll, axis=0), np.roll(label, -roll, axis=0)
        known[name] = ((ed - roll) % n_frames, (es - roll) % n_frames)
        write_cine(image, geometry, folder / f"{name}_img.nii.gz")
        write_cine(label, geometry, folder / f"{name}.nii.gz")
        cases.append(CaseRecord(name, folder / f"{name}.nii.gz", folder / f"{name}_img.nii.gz", (), n_frames,
                                tuple([0.01] * n_frames), "cine"))
    for subject, seed, phases in (("pair", 3, ("ED", "ES")), ("lone", 4, ("ED",))):
        for phase in phases:
            case = make_phantom_subject(seed, fov_mm=160.0)[phase]
            write_image(case.image, case.geometry, folder / f"{subject}_{phase}_img.nii.gz")
            write_image(case.label, case.geometry, folder / f"{subject}_{phase}.nii.gz")
            image_path = folder / f"{subject}_{phase}_img.nii.gz"
            cases.append(CaseRecord(f"{subject}_{phase}", folder / f"{subject}_{phase}.nii.gz", image_path,
                                    (image_path,)))
    # a mask of unknown phase, and a cine in which nothing was found: volumes only, a figure all the same
    case = make_phantom_subject(5, fov_mm=160.0)["ED"]
    write_image(case.image, case.geometry, folder / "mystery_img.nii.gz")
    write_image(case.label, case.geometry, folder / "mystery.nii.gz")
    cases.append(CaseRecord("mystery", folder / "mystery.nii.gz", folder / "mystery_img.nii.gz", ()))
    image, label, geometry, _, _ = make_phantom_cine(6, n_frames=3, fov_mm=160.0)
    write_cine(image, geometry, folder / "blank_img.nii.gz")
    write_cine(np.zeros_like(label), geometry, folder / "blank.nii.gz")
    cases.append(CaseRecord("blank", folder / "blank.nii.gz", folder / "blank_img.nii.gz", (), 3, (), "cine"))
    failure = CaseFailure("broken", str(folder / "broken.nii.gz"), "not an image")
    outputs = analyse_cases(cases, folder, failures=[failure], suffix="_part1")
    return folder, outputs, known


def test_tables_figures_and_report_are_written(analysed):
    folder, outputs, _ = analysed
    for name in ("measures_part1.csv", "volumes_part1.csv", "qc_part1.csv", "report_part1.html"):
        assert (folder / name).is_file(), name
    from autocmr.analysis.pipeline import figure_file_name

    for subject in ("cineA", "cineB", "pair", "lone", "mystery", "blank"):
        assert (folder / "figures" / figure_file_name(subject)).stat().st_size > 10_000
    assert not [p for p in folder.rglob(f"{TEMP_PREFIX}*")]  # nothing half-written left behind
    page = (folder / "report_part1.html").read_text()
    assert page.index("broken") < page.index("cineA")  # failed and flagged subjects come first
    assert "figures/pair.png" in page and "not an image" in page and "http" not in page


def test_cine_ed_es_match_the_phantom_and_measures_are_consistent(analysed):
    folder, _, known = analysed
    measures = pd.read_csv(folder / "measures_part1.csv").set_index("subject")
    for name, (ed, es) in known.items():
        row = measures.loc[name]
        assert (row["ED_frame"], row["ES_frame"]) == (ed, es)
        assert row["review"] == False, row["qc_flags"]  # noqa: E712 - exact masks pass QC
        assert row["LVEF_percent"] == pytest.approx(100 * row["LVSV_mL"] / row["LVEDV_mL"], rel=1e-4)  # 6 digits
        assert row["LVEDV_mL"] - row["LVESV_mL"] == pytest.approx(row["LVSV_mL"], abs=1e-3)
    volumes = pd.read_csv(folder / "volumes_part1.csv")
    cine = volumes[volumes["subject"] == "cineB"].sort_values("frame")
    assert len(cine) == 14 and cine["LV_mL"].idxmax() == cine.index[cine["phase"] == "ED"][0]
    assert measures.loc["broken", "status"] == "failed" and measures.loc["broken", "review"]


def test_lone_phase_has_partial_measures_and_a_note(analysed):
    folder, _, _ = analysed
    row = pd.read_csv(folder / "measures_part1.csv").set_index("subject").loc["lone"]
    assert row["LVEDV_mL"] > 0 and math.isnan(row["LVEF_percent"]) and math.isnan(row["LVESV_mL"])
    assert "only ED given" in row["notes"]
    measures = pd.read_csv(folder / "measures_part1.csv").set_index("subject")
    assert measures.loc["mystery", "status"] == "ok" and math.isnan(measures.loc["mystery", "LVEDV_mL"])
    assert measures.loc["blank", "status"] == "ok" and "missing_structure" in measures.loc["blank", "qc_flags"]
    assert "no LV or RV in any frame" in measures.loc["blank", "notes"]
    qc = pd.read_csv(folder / "qc_part1.csv").set_index("subject")
    assert qc.loc["pair", "n_flags"] == 0 and qc.loc["broken", "analysis_failed"] == 1


def test_in_memory_analysis_of_a_cine():
    _, labels, geometry, ed, es = make_phantom_cine(7, n_frames=8, fov_mm=160.0)
    from autocmr.analysis.measures import FrameMask

    frames = []
    for t, label in enumerate(labels):
        canonical, spacing, _ = to_canonical(label, geometry.spatial())
        frames.append(FrameMask(canonical, spacing, "c", t))
    report = analyse_masks("c", frames)
    assert (report.measures.ed.frame, report.measures.es.frame) == (ed, es)
    assert report.measures.measures["LVEF"] > 30 and not report.review


def test_a_blank_frame_of_a_cine_is_never_ed_or_es():
    """A zero-padded frame's empty mask would be the smallest volume, so ES, and the measures nonsense."""
    _, labels, geometry, ed, es = make_phantom_cine(7, n_frames=8, fov_mm=160.0)
    frames = []
    for t, label in enumerate(list(labels) + [np.zeros_like(labels[0])]):
        canonical, spacing, _ = to_canonical(label, geometry.spatial())
        frames.append(FrameMask(canonical, spacing, "c", t, blank=t == len(labels)))
    report = analyse_masks("c", frames)
    assert (report.measures.ed.frame, report.measures.es.frame) == (ed, es)
    assert any("frame(s) [8] have no image content" in n for n in report.measures.notes)
    # not marked blank (noise, not exactly constant): its missing LV still keeps it from ES, now as a doubt
    unmarked = analyse_masks("c", [replace(f, blank=False) for f in frames])
    assert unmarked.measures.es.frame == es and "ed_es_doubtful" in unmarked.qc.flags


def test_a_cine_without_any_ventricle_gets_volumes_and_flags_not_a_failure():
    from autocmr.analysis.measures import FrameMask

    empty = np.zeros((6, 40, 40), np.uint8)
    frames = [FrameMask(empty, (8.0, 1.5, 1.5), "noise", t) for t in range(3)]
    report = analyse_masks("noise", frames)
    assert report.measures.is_cine and report.measures.ed is None and report.measures.es is None
    assert all(math.isnan(v) for v in report.measures.measures.values())
    assert [row["LV"] for row in report.measures.volume_rows] == [0.0] * 3
    assert report.review and "missing_structure" in report.qc.flags
    assert "no LV or RV in any frame: no ED/ES, no measures" in report.notes
    assert math.isnan(report.uncertainty)  # no ensemble disagreement given: none reported, no flag from it
    scored = [FrameMask(empty, (8.0, 1.5, 1.5), "noise", t, uncertainty=0.5) for t in range(3)]
    report = analyse_masks("noise", scored)
    assert "high_uncertainty" in report.qc.flags and report.uncertainty == 0.5  # the score behind the flag


def test_a_killed_runs_temporaries_are_removed_but_not_other_parts(tmp_path):
    stale = tmp_path / f"{TEMP_PREFIX}0123456789ab_measures_part2.csv"
    other = tmp_path / f"{TEMP_PREFIX}0123456789ab_measures_part3.csv"  # another part, maybe writing now
    stale.write_text("half")
    other.write_text("half")
    outputs = analyse_cases([], tmp_path, failures=[CaseFailure("x", "x.nii.gz", "unreadable")], suffix="_part2")
    assert not stale.exists() and other.exists()
    assert [r.subject for r in outputs.reports] == ["x"] and (tmp_path / "report_part2.html").is_file()


def test_heart_rate_from_dicom_headers(sunnybrook_root, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from autocmr.analysis.pipeline import dicom_heart_rate

    assert dicom_heart_rate(sorted((sunnybrook_root / "dicom").glob("*.dcm"))[:2]) == 80.0  # HeartRate tag
    # each breath-hold slice records its own rate (75-82 bpm here): the median over slice positions, not the
    # rate of whichever file sorts first (1.dcm: 80)
    assert dicom_heart_rate(sorted((sunnybrook_root / "dicom").glob("*.dcm"))) == 79.0
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.NominalInterval = 750  # R-R interval in ms, no HeartRate: 80 bpm
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=False)
    assert dicom_heart_rate([tmp_path / "x.dcm"]) == pytest.approx(80.0)
    assert dicom_heart_rate([tmp_path / "missing.dcm"]) is None
    enhanced = Dataset()  # Enhanced MR: the R-R interval in the functional groups' cardiac synchronisation
    enhanced.file_meta = ds.file_meta
    sync, groups = Dataset(), Dataset()
    sync.CardiacRRIntervalSpecified = 1000.0
    groups.CardiacSynchronizationSequence = [sync]
    enhanced.SharedFunctionalGroupsSequence = [groups]
    enhanced.save_as(tmp_path / "enhanced.dcm", enforce_file_format=False)
    assert dicom_heart_rate([tmp_path / "enhanced.dcm"]) == pytest.approx(60.0)


def test_a_case_of_unknown_phase_gets_volumes_and_anatomical_qc():
    from autocmr.analysis.measures import FrameMask

    case = make_phantom_subject(8, fov_mm=160.0)["ED"]
    label, spacing, _ = to_canonical(case.label, case.geometry)
    clean = analyse_masks("u", [FrameMask(label, spacing, "u")])
    assert clean.qc.flags == [] and math.isnan(clean.measures.measures["LVEF"])
    assert clean.measures.volume_rows[0]["LV"] > 0 and "volumes only" in clean.notes[-1]
    broken = analyse_masks("u", [FrameMask(np.where(label == 3, 0, label), spacing, "u")])
    assert "missing_structure" in broken.qc.flags and broken.review


def test_reanalysing_a_merged_output_folder_pairs_ed_and_es_of_different_parts(tmp_path):
    import json

    from autocmr.analysis.pipeline import analyse_output_folder

    cases = {}
    for phase, case in make_phantom_subject(9, fov_mm=160.0).items():
        write_image(case.image, case.geometry, tmp_path / f"s_{phase}_0000.nii.gz")
        write_image(case.label, case.geometry, tmp_path / f"s_{phase}.nii.gz")
        cases[f"s_{phase}"] = {"kind": "3d", "sources": [str(tmp_path / f"s_{phase}_0000.nii.gz")],
                               "output": str(tmp_path / f"s_{phase}.nii.gz"), "uncertainty": [0.02]}
    (tmp_path / "predictions.json").write_text(json.dumps({"input": str(tmp_path / "in"), "cases": cases}))
    (tmp_path / "failures.json").write_text(json.dumps([{"name": "z", "file": "z.nii.gz", "reason": "truncated"}]))
    outputs = analyse_output_folder(tmp_path, thresholds=QcThresholds(min_lv_length_mm=27.5))
    by_name = {r.subject: r for r in outputs.reports}
    assert set(by_name) == {"s", "z"} and by_name["z"].status == "failed"
    assert "less than 27.5 mm" in (tmp_path / "report.html").read_text()  # the legend states the limits used
    assert by_name["s"].measures.measures["LVEF"] > 30 and by_name["s"].uncertainty == pytest.approx(0.02)
    assert (tmp_path / "measures.csv").is_file() and (tmp_path / "report.html").is_file()


def test_two_ed_files_and_no_es_give_volumes_and_notes_not_a_failure(tmp_path):
    case = make_phantom_subject(10, fov_mm=160.0)["ED"]
    cases = []
    for name in ("p_ED", "p-ED"):
        write_image(case.label, case.geometry, tmp_path / f"{name}.nii.gz")
        cases.append(CaseRecord(name, tmp_path / f"{name}.nii.gz", None, ()))
    (report,) = analyse_cases(cases, tmp_path).reports
    assert report.status == "ok" and math.isnan(report.measures.measures["LVEDV"])
    assert len(report.measures.volume_rows) == 2 and report.measures.volume_rows[0]["LV"] > 0
    assert "several ED cases" in report.notes[0] and report.figure is not None
    assert report.review and "ambiguous_phase" in report.qc.flags  # sorted to the top of the report


def test_two_ed_files_beside_one_es_keep_the_es_measures_and_are_flagged(tmp_path):
    subject = make_phantom_subject(10, fov_mm=160.0)
    cases = []
    for name, case in (("p_ED", subject["ED"]), ("p-ED", subject["ED"]), ("p_ES", subject["ES"])):
        write_image(case.label, case.geometry, tmp_path / f"{name}.nii.gz")
        cases.append(CaseRecord(name, tmp_path / f"{name}.nii.gz", None, ()))
    (report,) = analyse_cases(cases, tmp_path).reports
    values = report.measures.measures
    assert values["LVESV"] > 0 and math.isnan(values["LVEDV"]) and math.isnan(values["LVEF"])
    assert "ambiguous_phase" in report.qc.flags and report.review
    rows = {row["case"]: row for row in report.measures.volume_rows}  # every file's volumes, for the reviewer
    assert set(rows) == {"p_ED", "p-ED", "p_ES"} and rows["p_ES"]["phase"] == "ES" and rows["p_ED"]["phase"] == ""
    assert rows["p_ED"]["LV"] == pytest.approx(rows["p-ED"]["LV"]) and rows["p_ED"]["LV"] > rows["p_ES"]["LV"]


def test_ed_and_es_stacks_of_different_sizes_are_drawn(tmp_path):
    subject = make_phantom_subject(11, fov_mm=160.0)
    cases = []
    for phase, case in subject.items():
        label = case.label if phase == "ED" else case.label[:3]  # ES: three slices only (another file)
        geometry = case.geometry if phase == "ED" else type(case.geometry)(
            case.geometry.size[:2] + (label.shape[0],), case.geometry.spacing, case.geometry.origin,
            case.geometry.direction)
        write_image(label, geometry, tmp_path / f"q_{phase}.nii.gz")
        cases.append(CaseRecord(f"q_{phase}", tmp_path / f"q_{phase}.nii.gz", None, ()))
    (report,) = analyse_cases(cases, tmp_path).reports
    assert report.status == "ok" and report.figure == "figures/q.png" and (tmp_path / report.figure).is_file()
    assert report.measures.measures["LVEF"] > 0


def test_a_figure_that_fails_costs_the_figure_not_the_measures(tmp_path, monkeypatch):
    from autocmr.analysis import pipeline

    for phase, case in make_phantom_subject(12, fov_mm=160.0).items():
        write_image(case.label, case.geometry, tmp_path / f"r_{phase}.nii.gz")
    cases = [CaseRecord(f"r_{p}", tmp_path / f"r_{p}.nii.gz", None, ()) for p in ("ED", "ES")]

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(pipeline, "_figure", broken)
    (report,) = analyse_cases(cases, tmp_path).reports
    assert report.status == "ok" and report.figure is None and report.measures.measures["LVEF"] > 0
    assert "figure not drawn (RuntimeError: no fonts)" in report.notes


def test_an_unreadable_mask_is_a_failed_row_not_a_crash(tmp_path):
    import json

    from autocmr.analysis.pipeline import analyse_output_folder

    (tmp_path / "m.nii.gz").write_bytes(b"truncated")
    cases = {"m": {"kind": "3d", "sources": [str(tmp_path / "m_0000.nii.gz")], "output": str(tmp_path / "m.nii.gz")}}
    (tmp_path / "predictions.json").write_text(json.dumps({"cases": cases}))
    outputs = analyse_output_folder(tmp_path)
    assert [(r.subject, r.status) for r in outputs.reports] == [("m", "failed")]
    assert "mask unreadable" in outputs.reports[0].notes[0]


def test_a_recorded_case_whose_mask_is_gone_is_reported_not_dropped(tmp_path):
    import json

    from autocmr.analysis.pipeline import analyse_output_folder

    cases = {"gone": {"kind": "3d", "sources": [str(tmp_path / "gone_0000.nii.gz")],
                      "output": str(tmp_path / "gone.nii.gz")},
             "seg": {"kind": "dicom", "sources": [str(tmp_path / "dcm" / "1.dcm")],
                     "output": str(tmp_path / "seg.nii.gz")}}
    (tmp_path / "seg_seg.dcm").write_bytes(b"a DICOM-SEG written instead of the NIfTI mask")
    case = make_phantom_subject(30, fov_mm=160.0)["ED"]
    write_image(case.label, case.geometry, tmp_path / "moved.nii.gz")  # recorded where another machine wrote it
    cases["moved"] = {"kind": "3d", "sources": ["/elsewhere/moved_0000.nii.gz"], "output": "/elsewhere/moved.nii.gz"}
    (tmp_path / "predictions.json").write_text(json.dumps({"cases": cases}))
    outputs = analyse_output_folder(tmp_path)
    notes = {r.subject: (r.status, r.notes[0]) for r in outputs.reports}
    assert notes["gone"][0] == "failed" and "is not there (moved or deleted?)" in notes["gone"][1]
    assert "dicom-seg writes no NIfTI mask" in notes["seg"][1]
    assert notes["moved"][0] == "ok"  # found beside predictions.json
    assert "gone" in (tmp_path / "report.html").read_text()


def test_subjects_whose_names_sanitise_alike_get_their_own_figures(tmp_path):
    from autocmr.analysis.pipeline import figure_file_name

    cases, rows = [], []
    for k, subject in enumerate(("P 1", "P/1", "P_1")):
        for phase, case in make_phantom_subject(20 + k, fov_mm=160.0).items():
            name = f"c{k}_{phase}"
            write_image(case.label, case.geometry, tmp_path / f"{name}.nii.gz")
            cases.append(CaseRecord(name, tmp_path / f"{name}.nii.gz", None, ()))
            rows.append({"case_id": name, "subject": subject, "phase": phase})
    metadata = pd.DataFrame(rows).set_index("case_id")
    reports = analyse_cases(cases, tmp_path, metadata=metadata).reports
    figures = {r.subject: r.figure for r in reports}
    assert set(figures) == {"P 1", "P/1", "P_1"} and len(set(figures.values())) == 3
    assert figures["P_1"].startswith("figures/P_1_")  # upper case: hashed, as P_1 and p_1 are one file on macOS
    assert all((tmp_path / f).is_file() for f in figures.values())
    assert figure_file_name("P 1") == figure_file_name("P 1") != figure_file_name("P/1")  # stable across parts
    assert figure_file_name("p_1") == "p_1.png"  # a lower-case, file-safe ASCII name is kept as it is
    assert figure_file_name("P1").lower() != figure_file_name("p1").lower()
    assert figure_file_name("Ame\u0301lie").lower() != figure_file_name("Am\u00e9lie").lower()  # NFD vs NFC


def test_a_single_slice_cine_gets_volumes_and_a_note_but_no_clinical_measures():
    image, label, geometry, ed, es = make_phantom_cine(5, n_frames=8, fov_mm=160.0)
    frames = []
    for t in range(label.shape[0]):
        canonical, spacing, _ = to_canonical(label[t], geometry.spatial())
        middle = canonical.shape[0] // 2
        frames.append(FrameMask(canonical[middle:middle + 1], spacing, "lax", frame=t))
    report = analyse_masks("lax", frames)
    assert all(math.isnan(report.measures.measures[m]) for m in ("LVEDV", "LVEF", "LVM", "RVEF"))
    assert len(report.measures.volume_rows) == 8 and report.measures.volume_rows[0]["LV"] > 0
    assert "not a short-axis stack" in report.notes[-1] and report.review
    three = [FrameMask(np.repeat(f.label, 3, axis=0), f.spacing, "sax", frame=f.frame) for f in frames]
    assert not math.isnan(analyse_masks("sax", three).measures.measures["LVEF"])  # 3 slices: measured
    pair = [replace(three[ed], phase="ED"), replace(frames[es], phase="ES")]  # ES from a lone slice
    assert math.isnan(analyse_masks("mixed", pair).measures.measures["LVEF"])


def test_separate_ed_and_es_dicom_series_give_the_heart_rate_too(sunnybrook_root, tmp_path):
    dicom = sorted((sunnybrook_root / "dicom").glob("*.dcm"))[:2]
    cases = []
    for phase in ("ED", "ES"):
        case = make_phantom_subject(5, fov_mm=160.0)[phase]
        write_image(case.label, case.geometry, tmp_path / f"p_{phase}.nii.gz")
        cases.append(CaseRecord(f"p_{phase}", tmp_path / f"p_{phase}.nii.gz", None, tuple(dicom), kind="dicom"))
    outputs = analyse_cases(cases, tmp_path / "out", figures=False)
    measures = pd.read_csv(outputs.files["measures.csv"])
    assert measures.loc[0, "HR_bpm"] == 80.0 and measures.loc[0, "CO_L_per_min"] > 0


def test_a_thin_slice_stack_whose_slice_axis_is_not_first_in_patient_order_is_checked_along_its_slices(tmp_path):
    """Slices 1.4x the pixel size (no 'thick-slice' stack for the canonical order, which then sorts the axes by
    patient direction) with the slice normal along the patient's x: the QC rules and figures must still run
    across the slices, not across an in-plane axis (the myocardium then looked open, the LV profile irregular)."""
    from autocmr.io.image import Geometry

    subject = make_phantom_subject(7, fov_mm=160.0)
    # thin slices: a short stack and small volumes, which are not what this test is about
    thresholds = QcThresholds(min_lv_length_mm=5.0, min_rv_length_mm=3.0, edv_range_ml=(0.0, 1e6),
                              lvm_range_g=(0.0, 1e6))
    flags = {}
    for layout in ("usual", "thin"):
        cases = []
        for phase, case in subject.items():
            g = case.geometry
            if layout == "thin":  # ITK x -> patient y, y -> patient z, z (the slices) -> patient x
                g = Geometry(g.size, (g.spacing[0], g.spacing[1], 1.4 * max(g.spacing[:2])), g.origin,
                             (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
            path = tmp_path / layout / f"s_{phase}.nii.gz"
            write_image(case.label, g, path)
            cases.append(CaseRecord(f"s_{phase}", path, None, ()))
        (report,) = analyse_cases(cases, tmp_path / layout, thresholds=thresholds).reports
        flags[layout] = sorted(report.qc.flags)
    assert flags["thin"] == flags["usual"] == []


def test_merged_parts_that_saw_other_paths_and_a_foreign_cases_csv_still_get_their_report(tmp_path, caplog):
    """autocmr_merge_parts records the input and model as lists when the parts' nodes mounted them elsewhere
    (a TypeError before); a cases.csv found beside the input that is another tool's file is left out with a
    warning, not the end of the analysis; a --metadata file given by the user still has to be right."""
    import json
    import logging

    from autocmr.analysis.pipeline import analyse_output_folder
    from autocmr.errors import InputFileError

    inputs = tmp_path / "in"
    inputs.mkdir()
    (tmp_path / "cases.csv").write_text("patient,notes\nA,unrelated\n")  # beside the input: found, not ours
    out = tmp_path / "out"
    for phase, case in make_phantom_subject(31, fov_mm=160.0).items():
        write_image(case.label, case.geometry, out / f"p1_{phase}.nii.gz")
    cases = {f"p1_{phase}": {"kind": "3d", "sources": [str(inputs / f"p1_{phase}_0000.nii.gz")],
                             "output": str(out / f"p1_{phase}.nii.gz")} for phase in ("ED", "ES")}
    predictor = {"model": [str(tmp_path / "no_model_here"), "/mnt/node2/no_model_here"]}
    (out / "predictions.json").write_text(json.dumps({"cases": cases, "input": [str(inputs), "/mnt/node2/in"],
                                                      "predictor": predictor}))
    with caplog.at_level(logging.WARNING):
        outputs = analyse_output_folder(out)
    assert [(r.subject, r.status) for r in outputs.reports] == [("p1", "ok")]
    assert "not used for subjects and phases" in caplog.text
    assert (out / "report.html").is_file() and "no_model_here" in (out / "report.html").read_text()
    with pytest.raises(InputFileError, match="cases.csv"):
        analyse_output_folder(out, metadata=tmp_path / "cases.csv")
