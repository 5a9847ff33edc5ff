"""Cluster inference in parts: three parts predict into one folder without colliding, and one command merges
their tables into what a single run would have written."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from autocmr.analysis.pipeline import analyse_batch
from autocmr.cli.merge_parts import main as merge_main
from autocmr.errors import ConfigurationError
from autocmr.inference.batch import predict_folder
from autocmr.inference.parts import find_parts, merge_parts, part_file_name
from autocmr.io.image import write_image
from tests.helpers import small_case

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts_in")
    for seed, name in enumerate(NAMES):
        case = small_case(20 + seed)
        write_image(case.image, case.geometry, folder / f"{name}.nii.gz")
    (folder / "e.nii.gz").write_bytes(b"not an image")  # fails in whichever part it falls
    return folder


def test_part_file_names():
    assert part_file_name("failures.json", 3, 2) == "failures_part2.json"
    assert part_file_name("measures.csv", 3, 0) == "measures_part0.csv"
    assert part_file_name("failures.json", 1, 0) == "failures.json"


def test_a_subjects_cases_fall_in_one_part():
    from autocmr.inference.parts import subject_key, take_part

    names = ["p1_ED", "p1_ES", "p2-ed", "p2-es", "patient003_frame01", "patient003_frame12", "q", "r"]
    parts = [take_part(names, 3, k, subject_key) for k in range(3)]
    assert parts == [["p1_ED", "p1_ES", "q"], ["p2-ed", "p2-es", "r"], ["patient003_frame01", "patient003_frame12"]]
    table = pd.DataFrame({"subject": ["S", "S"]}, index=["x", "y"])
    assert subject_key("x", table) == subject_key("y", table) == "S" and subject_key("z", table) == "z"


def test_three_parts_merge_into_one_set_of_tables(inputs, tmp_path, tiny_predictor):
    out = tmp_path / "out"
    reports = [predict_folder(inputs, out, tiny_predictor, num_parts=3, part_id=k, num_workers=0,
                              after_batch=analyse_batch) for k in range(3)]
    assert sorted(n for r in reports for n in r.done) == NAMES  # every case once, in exactly one part
    assert all((out / f"{n}.nii.gz").is_file() for n in NAMES)
    for k in range(3):  # each part wrote its own tables; none wrote the unsuffixed ones
        assert (out / f"failures_part{k}.json").is_file() and (out / f"predictions_part{k}.json").is_file()
    assert not (out / "failures.json").exists() and not (out / "predictions.json").exists()
    csv_parts = {name for name in find_parts(out) if name.endswith(".csv")}
    assert {"measures.csv", "volumes.csv", "qc.csv"} <= csv_parts  # each part's after_batch hook analysed it

    (out / "report.html").write_text("<html>an earlier unsplit run's report</html>")
    assert merge_main([str(out)]) == 1  # merged; exit 1 because a case failed, as autocmr_predict would
    # the earlier run's report would contradict the merged tables: removed (the parts keep theirs)
    assert not (out / "report.html").exists() and (out / "report_part0.html").is_file()
    failures = json.loads((out / "failures.json").read_text())
    assert [f["name"] for f in failures] == ["e"] and "e.nii.gz" in failures[0]["file"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["done"] == NAMES and sorted(predictions["cases"]) == NAMES
    assert predictions["failed"] == ["e"] and predictions["num_parts"] == 3
    assert predictions["merged_from"] == [f"predictions_part{k}.json" for k in range(3)]
    assert predictions["wall_s"] == max(round(r.wall_s, 3) for r in reports)  # the parts ran side by side
    for name in csv_parts:  # the analysis tables have every part's rows
        parts = [pd.read_csv(p) for p in find_parts(out)[name].values()]
        assert len(pd.read_csv(out / name)) == sum(len(p) for p in parts), name
    # merging again (say after one part was rerun) gives the same result
    merge_parts(out)
    assert json.loads((out / "predictions.json").read_text())["done"] == NAMES


def test_missing_or_foreign_parts_are_refused_with_the_reason(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigurationError, match="no predictions_partK.json"):
        merge_parts(out)
    describe = {"configuration": "2d", "folds": ["0"], "mirror_axes": [0, 1], "step": 0.5, "postprocessing": {},
                "model": "/m", "device": "cuda:0"}
    for k in (0, 2):
        doc = {"predictor": describe, "num_parts": 3, "part_id": k, "wall_s": 1.0, "done": [f"c{k}"],
               "skipped": [], "failed": [], "cases": {f"c{k}": {}}}
        (out / f"predictions_part{k}.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match=r"part\(s\) \[1\] of 3"):
        merge_parts(out)
    merged = merge_parts(out, allow_incomplete=True)
    assert merged.done == 2 and merged.summary().startswith("merged 2 of 3 parts")
    doc["predictor"] = dict(describe, step=1.0, device="cuda:1")  # part 2 predicted with another step
    (out / "predictions_part2.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="part 2 was predicted differently.*step"):
        merge_parts(out, allow_incomplete=True)
    assert merge_main([str(tmp_path / "nowhere")]) == 2


def _part(out, k, num_parts, *, started="2026-11-30T10:00:00+00:00", cases=3, digest="d1", **extra):
    describe = {"configuration": "2d", "folds": ["0"], "mirror_axes": [], "step": 0.5, "postprocessing": {},
                "model": "/m", "device": "cpu"}
    doc = {"predictor": describe, "num_parts": num_parts, "part_id": k, "wall_s": 1.0, "done": [f"c{k}"],
           "skipped": [], "failed": [], "cases": {f"c{k}": {}}, "complete": True,
           "split": {"cases": cases, "digest": digest, "started": started}, **extra}
    (out / f"predictions_part{k}.json").write_text(json.dumps(doc))
    pd.DataFrame({"subject": [f"s{k}"]}).to_csv(out / f"measures_part{k}.csv", index=False)


def test_a_stopped_running_or_differently_dealt_part_is_merged_only_when_allowed(tmp_path):
    for k in range(2):
        _part(tmp_path, k, 2)
    assert merge_parts(tmp_path).done == 2
    _part(tmp_path, 1, 2, complete=False, not_attempted=["c5", "c7"])  # Ctrl-C or a cluster's time limit
    with pytest.raises(ConfigurationError, match=r"part 1 stopped before it finished \(2 case\(s\) not attempted"):
        merge_parts(tmp_path)
    assert merge_parts(tmp_path, allow_incomplete=True).done == 2
    _part(tmp_path, 1, 2)
    journal = tmp_path / ".predictions_part1.progress.jsonl"
    journal.write_text("{}\n")  # part 1 is running again (or was killed) after writing its record
    with pytest.raises(ConfigurationError, match=r"part\(s\) \[1\] are running now or were killed"):
        merge_parts(tmp_path)
    journal.unlink()
    _part(tmp_path, 1, 2, cases=4, digest="d2")  # a study added before part 1 started
    with pytest.raises(ConfigurationError, match="found different inputs .part 0: 3, part 1: 4 cases"):
        merge_parts(tmp_path)
    _part(tmp_path, 1, 2)
    doc = json.loads((tmp_path / "predictions_part1.json").read_text())
    doc["predictor"]["precision"] = "bf16"  # --precision auto on another CPU
    (tmp_path / "predictions_part1.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="part 1 was predicted differently.*precision"):
        merge_parts(tmp_path)


def test_an_earlier_split_into_more_parts_is_left_out(tmp_path, caplog):
    """A --continue rerun on 2 devices after a 4-part run: parts 2 and 3 of the old split stay on disk, the new
    parts carry their cases; the merge takes the latest split and says what it left out."""
    import logging

    for k in range(4):
        _part(tmp_path, k, 4, started="2026-11-30T09:00:00+00:00")
    (tmp_path / ".tmp_0123456789ab_measures_part1.csv").write_text("half")  # a part writing its table
    for k in range(2):
        _part(tmp_path, k, 2, started="2026-11-30T11:00:00+00:00")
    assert ".tmp_0123456789ab_measures.csv" not in find_parts(tmp_path)
    with caplog.at_level(logging.WARNING):
        merged = merge_parts(tmp_path)
    assert merged.num_parts == 2 and merged.done == 2
    assert "predictions_part2.json, predictions_part3.json are from an earlier split into [4] parts" in caplog.text
    assert pd.read_csv(tmp_path / "measures.csv")["subject"].tolist() == ["s0", "s1"]
    assert json.loads((tmp_path / "predictions.json").read_text())["complete"] is True


def test_csv_and_other_tables_merge_generically(tmp_path):
    describe = {"configuration": "2d", "folds": ["0"], "mirror_axes": [], "step": 0.5, "postprocessing": {},
                "weights": {"fold_0/checkpoint_final.pth": "a" * 64}}  # one model, mounted at each node's path
    for k, (subjects, extra) in enumerate([(["s0", "s3"], None), (["s1", "s4"], 7), (["s2"], None)]):
        (tmp_path / f"predictions_part{k}.json").write_text(json.dumps(
            {"predictor": dict(describe, model=f"/node{k}/m", device="cpu"), "num_parts": 3, "wall_s": k,
             "done": subjects, "skipped": [], "failed": [], "cases": {}}))
        table = pd.DataFrame({"subject": subjects, "lvedv_ml": [100.0 + i for i in range(len(subjects))]})
        if extra is not None:
            table["only_here"] = extra
        table.to_csv(tmp_path / f"measures_part{k}.csv", index=False)
        review_first = pd.DataFrame({"subject": list(reversed(subjects)), "review": [True] * len(subjects)})
        review_first.to_csv(tmp_path / f"qc_part{k}.csv", index=False)
        (tmp_path / f"notes_part{k}.json").write_text(json.dumps({"cases": subjects, "version": 1, "part": k}))
    merge_parts(tmp_path)
    measures = pd.read_csv(tmp_path / "measures.csv")
    assert measures["subject"].tolist() == ["s0", "s1", "s2", "s3", "s4"]  # every part sorted -> merged sorted
    assert measures["only_here"].notna().sum() == 2  # a column one part has is kept, empty elsewhere
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert qc["subject"].tolist() == ["s3", "s0", "s4", "s1", "s2"]  # parts in their own order: kept, concatenated
    notes = json.loads((tmp_path / "notes.json").read_text())
    assert notes == {"cases": ["s0", "s3", "s1", "s4", "s2"], "version": 1, "part": [0, 1, 2]}
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert predictions["predictor"]["model"] == ["/node0/m", "/node1/m", "/node2/m"] and predictions["wall_s"] == 2


def _merge_measures_parts(folder, parts) -> None:
    """Each table as one part's measures (with the predictions record a part writes), then merged."""
    describe = {"configuration": "2d", "folds": ["0"], "mirror_axes": [], "step": 0.5, "postprocessing": {}}
    for k, table in enumerate(parts):
        (folder / f"predictions_part{k}.json").write_text(json.dumps(
            {"predictor": dict(describe, model="m", device="cpu"), "num_parts": len(parts), "wall_s": k,
             "done": [], "skipped": [], "failed": [], "cases": {}}))
        table.to_csv(folder / f"measures_part{k}.csv", index=False)
    merge_parts(folder)


def test_merged_analysis_tables_keep_their_text_and_put_review_first(tmp_path):
    parts = [pd.DataFrame({"subject": ["0012", "0034"], "status": ["ok", "ok"], "review": [False, True],
                           "ED_frame": ["12", ""]}),
             pd.DataFrame({"subject": ["0056", "0078"], "status": ["failed", "ok"], "review": [True, False],
                           "ED_frame": ["", "3"]})]
    _merge_measures_parts(tmp_path, parts)
    text = (tmp_path / "measures.csv").read_text().splitlines()
    assert text[1:] == ["0056,failed,True,", "0034,ok,True,", "0012,ok,False,12", "0078,ok,False,3"]


def test_a_part_whose_analysis_did_not_finish_is_not_merged_as_if_it_had(tmp_path):
    """A part records its cases, then analyses them; cut off in between (a time limit), it leaves no table or
    an earlier run's. The merge says so instead of writing a measures.csv that lacks its subjects."""
    import os

    parts = [pd.DataFrame({"subject": ["a"], "lvedv_ml": [100.0]}),
             pd.DataFrame({"subject": ["b"], "lvedv_ml": [90.0]})]
    _merge_measures_parts(tmp_path, parts)  # both analysed: merged
    assert pd.read_csv(tmp_path / "measures.csv")["subject"].tolist() == ["a", "b"]
    record = tmp_path / "predictions_part1.json"
    earlier = record.stat().st_mtime - 60
    os.utime(tmp_path / "measures_part1.csv", (earlier, earlier))  # the table of a run before this record's
    with pytest.raises(ConfigurationError, match=r"measures.csv of part\(s\) \[1\] is older"):
        merge_parts(tmp_path)
    (tmp_path / "measures_part1.csv").unlink()
    with pytest.raises(ConfigurationError, match=r"part\(s\) \[1\] wrote no measures.csv"):
        merge_parts(tmp_path)
    merge_parts(tmp_path, allow_incomplete=True)
    assert pd.read_csv(tmp_path / "measures.csv")["subject"].tolist() == ["a"]
    # no part of this run analysed (--no-analysis, or --devices analysing the whole folder afterwards): the
    # tables an earlier run left are no problem of this merge, only not merged
    os.utime(tmp_path / "measures_part0.csv", (earlier, earlier))
    assert merge_parts(tmp_path).done == 0 and "measures.csv" not in merge_parts(tmp_path).merged


def test_merged_qc_columns_are_in_the_order_one_run_writes(tmp_path):
    """qc.csv's metric columns follow the fixed ones, sorted by name, over the subjects present: a part of 3D
    cases lacks a cine's curve-roughness column, and the merge must not put it last."""
    fixed = {"subject": ["a"], "status": ["ok"], "review": [False], "n_flags": [0], "flags": [""]}
    cine_part = pd.DataFrame({**fixed, "lv_curve_roughness": [0.1], "lv_profile_dip_ED": [0.0]})
    volume_part = pd.DataFrame({**fixed, "subject": ["b"], "apex_gap": [0.0], "lv_profile_dip_ED": [0.2]})
    describe = {"configuration": "2d", "folds": ["0"], "mirror_axes": [], "step": 0.5, "postprocessing": {}}
    for k, table in enumerate([volume_part, cine_part]):
        (tmp_path / f"predictions_part{k}.json").write_text(json.dumps(
            {"predictor": dict(describe, model="m", device="cpu"), "num_parts": 2, "wall_s": k,
             "done": [], "skipped": [], "failed": [], "cases": {}}))
        table.to_csv(tmp_path / f"qc_part{k}.csv", index=False)
    merge_parts(tmp_path)
    assert list(pd.read_csv(tmp_path / "qc.csv").columns) == [*fixed, "apex_gap", "lv_curve_roughness",
                                                              "lv_profile_dip_ED"]


def test_merged_measures_put_the_subjects_with_most_flags_first(tmp_path):
    parts = [pd.DataFrame({"subject": ["a", "b"], "status": ["ok", "ok"], "review": [True, True],
                           "qc_flags": ["fragmented", "fragmented;ef_out_of_range"]}),
             pd.DataFrame({"subject": ["c"], "status": ["ok"], "review": [False], "qc_flags": [""]})]
    _merge_measures_parts(tmp_path, parts)
    assert pd.read_csv(tmp_path / "measures.csv")["subject"].tolist() == ["b", "a", "c"]


def test_parts_that_dealt_other_jobs_from_the_same_names_are_refused(tmp_path, tiny_predictor):
    """Study b is still being copied when part 0 starts (unreadable: an input problem there) and readable when
    part 1 starts: the same names, but part 0 dealt [a, c] and part 1 [a, b, c], so c fell in no part."""
    folder, out = tmp_path / "in", tmp_path / "out"
    for seed, name in enumerate("abc"):
        case = small_case(30 + seed)
        write_image(case.image, case.geometry, folder / f"{name}.nii.gz")
    copied = (folder / "b.nii.gz").read_bytes()
    (folder / "b.nii.gz").write_bytes(copied[:100])  # half-copied
    first = predict_folder(folder, out, tiny_predictor, num_parts=2, part_id=0, num_workers=0)
    (folder / "b.nii.gz").write_bytes(copied)
    second = predict_folder(folder, out, tiny_predictor, num_parts=2, part_id=1, num_workers=0)
    assert first.done == ["a"] and second.done == ["b"]  # nobody predicted c
    with pytest.raises(ConfigurationError, match=r"found different inputs \(part 0: 2, part 1: 3 cases"):
        merge_parts(out)


def test_parts_without_weight_checksums_must_name_the_same_model_folder(tmp_path):
    """Without the weights' sha256 in their records, only the model path tells two parts' models apart."""
    for k in range(2):
        _part(tmp_path, k, 2)
    doc = json.loads((tmp_path / "predictions_part1.json").read_text())
    doc["predictor"]["model"] = "/other/model"
    (tmp_path / "predictions_part1.json").write_text(json.dumps(doc))
    (tmp_path / "measures_part1.csv").touch()  # analysed after the record, as a part does
    with pytest.raises(ConfigurationError, match="part 1 was predicted differently.*model: /m -> /other/model"):
        merge_parts(tmp_path)
    for k in range(2):  # with checksums the weights decide, wherever each node mounts the folder
        doc = json.loads((tmp_path / f"predictions_part{k}.json").read_text())
        doc["predictor"]["weights"] = {"fold_0/checkpoint_final.pth": "a" * 64}
        (tmp_path / f"predictions_part{k}.json").write_text(json.dumps(doc))
        (tmp_path / f"measures_part{k}.csv").touch()
    assert merge_parts(tmp_path).done == 2


def test_a_later_run_without_parts_is_not_overwritten_by_the_merge(tmp_path):
    """A 2-part run, then a plain run (or --devices with one device) into the same folder: its
    predictions.json is newer than the parts' records, and a merge would replace it with theirs."""
    import os

    for k in range(2):
        _part(tmp_path, k, 2)
        os.utime(tmp_path / f"predictions_part{k}.json", (1_000_000_000, 1_000_000_000))
    plain = {"predictor": {}, "num_parts": 1, "part_id": 0, "done": ["new"], "cases": {"new": {}}}
    (tmp_path / "predictions.json").write_text(json.dumps(plain))
    with pytest.raises(ConfigurationError, match=r"predictions.json: written by a run without parts after the "
                                                 r"newest part's record \(predictions_part\d.json\)"):
        merge_parts(tmp_path)
    assert json.loads((tmp_path / "predictions.json").read_text()) == plain
    assert merge_main([str(tmp_path)]) == 2
    (tmp_path / "predictions.json").unlink()  # the user chose the parts: merged, and merged again after that
    assert merge_parts(tmp_path).done == 2 and merge_parts(tmp_path).done == 2
