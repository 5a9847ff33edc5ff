"""Error breakdown by slice position: a synthetic heart whose prediction errors sit in known slices."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from autocmr.cli.evaluate import main
from autocmr.dataset.labels import LV, MYO, RV
from autocmr.errors import ConfigurationError
from autocmr.evaluation import evaluate_cases
from autocmr.evaluation.clinical import MYOCARDIAL_DENSITY_G_PER_ML
from autocmr.evaluation.metrics import voxel_volume_ml
from autocmr.evaluation.position_report import position_of
from autocmr.evaluation.slice_position import geometry_hint
from autocmr.io.image import Geometry, write_image

SPACING = (10.0, 1.5, 1.5)  # (z, y, x) mm
VOXEL_ML = voxel_volume_ml(SPACING)
N_SLICES = 9
# Reference LV extent: slices 1..6 (base first). Slice 0 has RV only (above the base), slices 7-8 are empty.
# With 6 slices: basal = 1, 2; mid = 3, 4; apical = 5, 6.
EXTENT = (1, 6)
EXPECTED_POSITIONS = ["above_base", "basal", "basal", "mid", "mid", "apical", "apical", "below_apex", "below_apex"]


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def synthetic_heart(scale: float = 1.0) -> np.ndarray:
    """(z, y, x) labels; the cavities taper from base (slice 1) to apex (slice 6), as real hearts do."""
    label = np.zeros((N_SLICES, 48, 48), np.uint8)
    label[0][_disc((48, 48), (24, 12), 7 * scale)] = RV
    for z, radius in zip(range(1, 7), (11, 11, 10, 9, 7, 5)):
        outer = _disc((48, 48), (24, 30), radius * scale)
        inner = _disc((48, 48), (24, 30), (radius - 3) * scale)
        label[z][outer] = MYO
        label[z][inner] = LV
        if z <= 5:
            label[z][_disc((48, 48), (24, 12), (radius - 3) * scale) & ~outer] = RV
    return label


def errors_in_known_slices(reference: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Prediction = reference + MYO added above the base, RV missed in the apical slice 5, LV added mid."""
    pred = reference.copy()
    added_myo = _disc((48, 48), (24, 30), 6) & (reference[0] == 0)
    pred[0][added_myo] = MYO
    missed_rv = reference[5] == RV
    pred[5][missed_rv] = 0
    added_lv = np.zeros((48, 48), bool)
    added_lv[2:4, 2:6] = True
    pred[3][added_lv] = LV
    return pred, {"myo_above": added_myo.sum() * VOXEL_ML, "rv_apical": -missed_rv.sum() * VOXEL_ML,
                  "lv_mid": added_lv.sum() * VOXEL_ML}


def _table(result, case_id: str) -> pd.DataFrame:
    rows = result.positions[result.positions["case_id"] == case_id]
    return rows.set_index(["class", "position"])


def test_positions_of_slices_both_orders():
    index = np.arange(N_SLICES)
    assert list(position_of(index, EXTENT, "first")) == EXPECTED_POSITIONS
    # the same stack stored apex first: slice k is slice N-1-k above
    flipped_extent = (N_SLICES - 1 - EXTENT[1], N_SLICES - 1 - EXTENT[0])
    assert list(position_of(index, flipped_extent, "last")) == EXPECTED_POSITIONS[::-1]


def test_errors_are_found_in_the_slices_that_hold_them():
    reference = synthetic_heart()
    pred, expected = errors_in_known_slices(reference)
    cases = [("s1_ED", reference, pred, SPACING),
             ("s2_ED", reference[::-1].copy(), pred[::-1].copy(), SPACING)]  # stored apex first
    result = evaluate_cases(cases, by=["slice_position"])
    for case in ("s1_ED", "s2_ED"):
        table = _table(result, case)
        assert (table["base_end_source"] == "anatomy").all()
        assert table.loc[("MYO", "above_base"), "vol_error_ml"] == pytest.approx(expected["myo_above"])
        assert table.loc[("MYO", "above_base"), "slices_added"] == 1
        assert table.loc[("MYO", "above_base"), "dice"] == 0.0
        assert table.loc[("RV", "apical"), "vol_error_ml"] == pytest.approx(expected["rv_apical"])
        assert table.loc[("RV", "apical"), "slices_missed"] == 1
        assert table.loc[("RV", "apical"), "vol_missed_ml"] == pytest.approx(-expected["rv_apical"])
        assert table.loc[("LV", "mid"), "vol_error_ml"] == pytest.approx(expected["lv_mid"])
        assert table.loc[("LV", "mid"), "slices_added"] == 0  # the mid slices already had LV
        untouched = [("LV", "basal"), ("LV", "apical"), ("MYO", "basal"), ("MYO", "mid"), ("MYO", "apical"),
                     ("RV", "basal"), ("RV", "mid"), ("RV", "above_base")]
        for key in untouched:
            assert table.loc[key, "vol_error_ml"] == 0.0 and table.loc[key, "dice"] == 1.0, key
        assert math.isnan(table.loc[("LV", "below_apex"), "dice"])  # empty in both: undefined, not 1
        # the positions partition the slices: their errors add up to the case's total volume error
        whole = result.cases[(result.cases["case_id"] == case)].set_index("class")
        per_class = table.groupby(level="class")["vol_error_ml"].sum()
        for name in ("LV", "MYO", "RV"):
            assert per_class[name] == pytest.approx(whole.loc[name, "vol_pred_ml"] - whole.loc[name, "vol_ref_ml"])


def test_measure_bias_split_by_position_and_phase():
    reference = synthetic_heart()
    pred, expected = errors_in_known_slices(reference)
    es_ref = synthetic_heart(scale=0.8)
    cases = [("s1_ED", reference, pred, SPACING), ("s1_ES", es_ref, es_ref.copy(), SPACING)]
    result = evaluate_cases(cases, by=["slice_position"])
    entry = result.summary["slice_position"]
    bias = entry["measure_bias_by_position"]
    assert bias["LVM"]["above_base"] == pytest.approx(expected["myo_above"] * MYOCARDIAL_DENSITY_G_PER_ML)
    assert bias["RVEDV"]["apical"] == pytest.approx(expected["rv_apical"])
    assert bias["LVEDV"]["mid"] == pytest.approx(expected["lv_mid"])
    assert all(v == 0.0 for v in bias["LVESV"].values()) and all(v == 0.0 for v in bias["RVESV"].values())
    # and the split adds up to the clinical table's bias
    agreement = result.summary["clinical"]["agreement"]
    assert sum(bias["LVM"].values()) == pytest.approx(agreement["LVM"]["bias"])
    assert sum(bias["RVEDV"].values()) == pytest.approx(agreement["RVEDV"]["bias"])
    es_rows = entry["all"]["ES"]["RV"]
    assert es_rows["apical"]["vol_error_ml_mean"] == 0.0 and es_rows["mid"]["dice_mean"] == 1.0
    assert entry["all"]["ED"]["RV"]["apical"]["slices_missed"] == 1
    assert "LVM" in result.report() and "above_base" in result.report()


def test_a_cines_frames_get_their_phases_from_the_reference_lv_curve():
    """A 4D case has no case-table phase per frame: its ED and ES are the reference's largest and smallest LV
    frames (as in the clinical table), the others 'other'; the measure split then works as for 3D files."""
    ed, es, mid = synthetic_heart(), synthetic_heart(scale=0.8), synthetic_heart(scale=0.9)
    pred, expected = errors_in_known_slices(ed)
    reference = np.stack([mid, ed, es])  # frame 1 is ED, frame 2 ES, frame 0 neither
    prediction = np.stack([mid.copy(), pred, es.copy()])
    result = evaluate_cases([("cine", reference, prediction, SPACING)], by=["slice_position"], make_plots=False)
    phases = result.positions.drop_duplicates("case_id").set_index("case_id")["phase"].to_dict()
    assert phases == {"cine@t00": "other", "cine@t01": "ED", "cine@t02": "ES"}
    entry = result.summary["slice_position"]
    assert set(entry["all"]) == {"ED", "ES", "other"}
    assert entry["measure_bias_by_position"]["LVEDV"]["mid"] == pytest.approx(expected["lv_mid"])
    assert result.clinical.iloc[0]["ref_ED"] == 1 and result.clinical.iloc[0]["ref_ES"] == 2


def test_base_end_option_overrides_the_anatomy():
    reference = synthetic_heart()
    pred, expected = errors_in_known_slices(reference)
    result = evaluate_cases([("s1_ED", reference, pred, SPACING)], by=["slice_position"], base_end="last")
    table = _table(result, "s1_ED")
    assert (table["base_end_source"] == "option").all()
    assert table.loc[("MYO", "below_apex"), "vol_error_ml"] == pytest.approx(expected["myo_above"])
    with pytest.raises(ConfigurationError, match="base_end"):
        evaluate_cases([("s1_ED", reference, pred, SPACING)], by=["slice_position"], base_end="top")


def test_no_lv_or_too_few_slices_gives_a_note_not_a_crash():
    reference = synthetic_heart()
    no_lv = np.where(np.isin(reference, [LV, MYO]), 0, reference).astype(np.uint8)
    short = reference.copy()
    short[3:] = 0  # LV on slices 1-2 only
    cases = [("nolv_ED", no_lv, no_lv, SPACING), ("short_ED", short, short, SPACING),
             ("good_ED", reference, reference, SPACING)]
    result = evaluate_cases(cases, by=["slice_position"])
    notes = result.summary["slice_position"]["cases_without_breakdown"]
    assert "no LV cavity or myocardium" in notes["nolv_ED"] and "2 slice(s)" in notes["short_ED"]
    assert set(result.positions["case_id"]) == {"good_ED"}
    assert "nolv_ED" in result.report()
    only_bad = evaluate_cases(cases[:2], by=["slice_position"])
    assert only_bad.positions.empty and only_bad.summary["slice_position"]["n_cases_with_breakdown"] == 0


def _header(normal: np.ndarray) -> Geometry:
    normal = normal / np.linalg.norm(normal)
    u = np.cross(normal, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    direction = np.stack([u, np.cross(normal, u), normal], axis=1)  # ITK columns: x, y, z (slice) axes
    return Geometry((48, 48, N_SLICES), (1.5, 1.5, 10.0), (0.0, 0.0, 0.0), tuple(direction.ravel()))


def test_geometry_hint_only_for_oblique_headers():
    identity = Geometry((48, 48, N_SLICES), (1.5, 1.5, 10.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    assert geometry_hint(identity) is None  # ACDC-style default header: no hint, whichever way it points
    # slices stacked towards the patient's left, anterior and inferior: the canonical first slice is basal,
    # whichever way the file stores them (canonical order undoes the storage flip)
    assert geometry_hint(_header(np.array([1.0, -1.0, -1.0]))) == "first"
    assert geometry_hint(_header(np.array([-1.0, 1.0, 1.0]))) == "first"
    # canonical slice +1 towards posterior, superior and right: the base is at the end
    assert geometry_hint(_header(np.array([-0.3, 0.8, 0.5]))) == "last"
    assert geometry_hint(_header(np.array([1.0, 1.0, 1.0]))) is None  # nearly across the long axis


def test_cli_by_slice_position_without_phase_metadata(tmp_path, capsys):
    geometry = Geometry((48, 48, N_SLICES), (1.5, 1.5, 10.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    reference = synthetic_heart()
    pred, expected = errors_in_known_slices(reference)
    for name in ("caseA", "caseB"):  # ids without _ED/_ES and no cases.csv: no phase known
        write_image(reference, geometry, tmp_path / "ref" / f"{name}.nii.gz")
        write_image(pred, geometry, tmp_path / "pred" / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(out),
                 "--by", "slice_position"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["slice_position"]
    assert entry["n_cases_with_breakdown"] == 2 and entry["measure_bias_by_position"] == {}
    assert entry["all"]["unknown"]["MYO"]["above_base"]["vol_error_ml_mean"] == pytest.approx(expected["myo_above"])
    assert "breakdowns" in summary and summary["breakdowns"] == {}  # slice_position is not a metadata column
    table = pd.read_csv(out / "slice_positions.csv")
    assert len(table) == 2 * 3 * 5  # 2 cases x 3 classes x 5 positions
    assert (out / "slice_position_summary.csv").is_file() and (out / "slice_position.png").stat().st_size > 1000
    assert "no subject with a positional breakdown at both ED and ES" in capsys.readouterr().out


def test_acdc_stacks_are_found_base_first(acdc_root):
    """Real ACDC references (identity headers): the anatomy puts the base at the first slice; a prediction that
    drops the most basal reference slice shows up as missed slices in the basal third only."""
    from autocmr.dataset.labels import ACDC_TO_AUTOCMR, remap_labels
    from autocmr.io.image import read_image

    cases, rows = [], []
    for patient, frames in (("patient001", (1, 12)), ("patient031", (1, 10))):
        for frame, phase in zip(frames, ("ED", "ES")):
            path = acdc_root / patient / f"{patient}_frame{frame:02d}_gt.nii.gz"
            label, geometry = read_image(path)
            reference = remap_labels(label, ACDC_TO_AUTOCMR, source=str(path))
            first = int(np.flatnonzero(np.isin(reference, [LV, MYO]).any(axis=(1, 2)))[0])
            pred = reference.copy()
            pred[first] = 0
            cases.append((f"{patient}_{phase}", reference, pred, geometry.spacing_zyx))
            rows.append({"case_id": f"{patient}_{phase}", "subject": patient, "phase": phase})
    result = evaluate_cases(cases, metadata=pd.DataFrame(rows), by=["slice_position"])
    table = result.positions
    assert set(table["base_end"]) == {"first"} and set(table["base_end_source"]) == {"anatomy"}
    lv = table[table["class"] == "LV"].set_index(["case_id", "position"])
    for case_id, *_ in cases:
        assert lv.loc[(case_id, "basal"), "slices_missed"] == 1 and lv.loc[(case_id, "basal"), "vol_error_ml"] < 0
        assert lv.loc[(case_id, "mid"), "vol_error_ml"] == 0 and lv.loc[(case_id, "apical"), "vol_error_ml"] == 0


def test_cross_validation_folders_are_pooled(tmp_path, capsys):
    """``-pred fold_0/validation fold_1/validation`` evaluates a whole cross-validation in one table."""
    geometry = Geometry((48, 48, N_SLICES), (1.5, 1.5, 10.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    reference = synthetic_heart()
    pred, _ = errors_in_known_slices(reference)
    for folder in ("ref", "fold_0", "fold_1"):
        (tmp_path / folder).mkdir()
    for k, name in enumerate(("s1_ED", "s1_ES", "s2_ED", "s2_ES")):
        write_image(reference, geometry, tmp_path / "ref" / f"{name}.nii.gz")
        write_image(pred, geometry, tmp_path / f"fold_{k // 2}" / f"{name}.nii.gz")
    folds = [str(tmp_path / "fold_0"), str(tmp_path / "fold_1")]
    out = tmp_path / "cv"
    assert main(["-ref", str(tmp_path / "ref"), "-pred", *folds, "-o", str(out), "--by", "slice_position",
                 "--no-plots"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 4 and summary["n_failed"] == 0 and summary["prediction_dir"] == folds
    assert summary["slice_position"]["n_cases_with_breakdown"] == 4
    assert main(["-ref", str(tmp_path / "ref"), "-pred", *folds]) == 2  # no -o: never write into a fold
    assert "need an output folder" in capsys.readouterr().err
    write_image(pred, geometry, tmp_path / "fold_1" / "s1_ED.nii.gz")
    assert main(["-ref", str(tmp_path / "ref"), "-pred", *folds, "-o", str(out)]) == 2
    assert "in two folders" in capsys.readouterr().err


def test_a_stack_of_thin_slices_is_broken_down_along_its_slices_whatever_its_orientation():
    """Slices 1.4x the pixel size, the slice normal along the patient's x axis: canonical order (patient-axis
    order for thin slices) puts an in-plane axis first there; the breakdown must still run along the slices."""
    from autocmr.evaluation.slice_position import slice_profile

    reference = synthetic_heart()
    prediction, _ = errors_in_known_slices(reference)
    spacing = (2.1, 1.5, 1.5)  # (z, y, x): slices 1.4x the pixels
    # ITK columns: x axis -> patient y, y axis -> patient z, z (slice) axis -> patient x
    direction = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    geometry = Geometry((48, 48, N_SLICES), spacing[::-1], (0.0, 0.0, 0.0), direction)
    labels = {"LV": LV, "MYO": MYO, "RV": RV}
    with_header = slice_profile("c", reference, prediction, spacing, labels, geometry=geometry)
    in_memory = slice_profile("c", reference, prediction, spacing, labels)
    assert with_header.n_slices == in_memory.n_slices == N_SLICES
    extent = in_memory.extent
    assert with_header.extent[1] - with_header.extent[0] == extent[1] - extent[0]
    volumes = sorted((r["class"], round(r["vol_ref_ml"], 6), round(r["vol_pred_ml"], 6)) for r in with_header.rows)
    assert volumes == sorted((r["class"], round(r["vol_ref_ml"], 6), round(r["vol_pred_ml"], 6))
                             for r in in_memory.rows)
