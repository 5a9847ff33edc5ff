"""Clinical measures: hand-built volumes, ED/ES detection, per-subject tables, real ACDC normal subjects."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autocmr.dataset.labels import ACDC_TO_AUTOCMR, LV, MYO, RV, remap_labels
from autocmr.evaluation.clinical import (MYOCARDIAL_DENSITY_G_PER_ML, clinical_measures, clinical_table_from_masks,
                                         ed_es_from_curve)
from autocmr.io.image import read_image

SPACING = (10.0, 1.0, 1.0)  # one voxel = 10 mm^3 = 0.01 mL


def _mask(lv: int, myo: int, rv: int) -> np.ndarray:
    """A label map with exactly ``lv``, ``myo``, ``rv`` voxels of each class (positions do not matter, but
    each class of four voxels or more is on all four slices, as a ventricle would be)."""
    flat = np.zeros(4 * 100 * 100, np.uint8)
    flat[:lv] = LV
    flat[lv:lv + myo] = MYO
    flat[lv + myo:lv + myo + rv] = RV
    assert lv + myo + rv <= flat.size
    return flat.reshape(100, 100, 4).transpose(2, 0, 1)  # consecutive voxels go round the slices


def test_measures_from_known_voxel_counts():
    ed, es = _mask(lv=8000, myo=6000, rv=9000), _mask(lv=3000, myo=6500, rv=4500)
    m = clinical_measures(ed, es, SPACING)
    assert m["LVEDV"] == pytest.approx(80.0) and m["LVESV"] == pytest.approx(30.0)
    assert m["LVSV"] == pytest.approx(50.0) and m["LVEF"] == pytest.approx(62.5)
    assert m["LVM"] == pytest.approx(60.0 * MYOCARDIAL_DENSITY_G_PER_ML)  # ED myocardium only
    assert m["RVEDV"] == pytest.approx(90.0) and m["RVESV"] == pytest.approx(45.0)
    assert m["RVSV"] == pytest.approx(45.0) and m["RVEF"] == pytest.approx(50.0)


def test_ejection_fraction_undefined_without_diastolic_cavity():
    m = clinical_measures(_mask(0, 10, 10), _mask(0, 10, 5), SPACING)
    assert math.isnan(m["LVEF"]) and m["RVEF"] == pytest.approx(50.0)
    # nor a stroke volume: an LV missed at ED but found at ES must not report a negative one
    m = clinical_measures(_mask(0, 10, 10), _mask(20, 10, 5), SPACING)
    assert m["LVEDV"] == 0.0 and m["LVESV"] == pytest.approx(0.2)
    assert math.isnan(m["LVSV"]) and math.isnan(m["LVEF"]) and m["RVSV"] == pytest.approx(0.05)


def test_ed_es_from_curve():
    assert ed_es_from_curve([110.0, 130.0, 90.0, 60.0, 75.0, 120.0]) == (1, 3)
    assert ed_es_from_curve(np.array([5.0, 5.0])) == (0, 0)  # ties: first frame
    with pytest.raises(ValueError, match="non-empty"):
        ed_es_from_curve([])
    with pytest.raises(ValueError, match="undefined"):
        ed_es_from_curve([1.0, float("nan")])


def test_table_from_metadata_and_from_a_cine():
    ed, es = _mask(8000, 6000, 9000), _mask(3000, 6000, 4500)
    small_es = _mask(2000, 6000, 4500)  # a predicted ES cavity that is too small
    meta = pd.DataFrame({"case_id": ["a1", "a2", "b1"], "subject": ["A", "A", "B"],
                         "phase": ["ED", "es", "ED"]}).set_index("case_id")
    cine_ref = np.stack([_mask(6000, 6000, 8000), ed, _mask(5000, 6000, 7000), es])
    cine_pred = np.stack([_mask(6000, 6000, 8000), ed, es, small_es])  # its own ES is frame 3
    table = clinical_table_from_masks([("a1", ed, ed, SPACING), ("a2", es, small_es, SPACING),
                                       ("b1", ed, ed, SPACING), ("cine", cine_ref, cine_pred, SPACING)], meta)
    rows = table.set_index("subject")
    assert rows.loc["A", "ref_LVEF"] == pytest.approx(62.5)
    assert rows.loc["A", "pred_LVEF"] == pytest.approx(75.0)
    assert rows.loc["A", "note"] == ""
    assert math.isnan(rows.loc["B", "ref_LVEF"]) and "ES" in rows.loc["B", "note"]  # no ES case
    assert (rows.loc["cine", "ref_ED"], rows.loc["cine", "ref_ES"]) == (1, 3)
    assert (rows.loc["cine", "pred_ED"], rows.loc["cine", "pred_ES"]) == (1, 3)
    assert rows.loc["cine", "ref_LVEF"] == pytest.approx(62.5)
    assert rows.loc["cine", "pred_LVESV"] == pytest.approx(20.0)


def test_subject_and_phase_from_case_ids_without_metadata():
    ed, es = _mask(8000, 6000, 9000), _mask(4000, 6000, 4500)
    table = clinical_table_from_masks([("p7_ED", ed, ed, SPACING), ("p7_ES", es, es, SPACING)])
    assert table["subject"].tolist() == ["p7"] and table.loc[0, "ref_LVEF"] == pytest.approx(50.0)


def _info(path):
    return dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)


@pytest.mark.parametrize("patient", ["patient061", "patient065", "patient069", "patient073"])
def test_normal_acdc_subjects_have_normal_function(acdc_root, patient):
    info = _info(acdc_root / patient / "Info.cfg")
    assert info["Group"].strip() == "NOR"
    masks = []
    for key in ("ED", "ES"):
        path = acdc_root / patient / f"{patient}_frame{int(info[key]):02d}_gt.nii.gz"
        array, geometry = read_image(path)
        masks.append(remap_labels(array, ACDC_TO_AUTOCMR, source=str(path)))
    m = clinical_measures(masks[0], masks[1], geometry.spacing_zyx)
    assert 50.0 <= m["LVEF"] <= 75.0
    assert 40.0 <= m["LVM"] <= 200.0  # g; adult LV mass (CMR reference ranges roughly 60-180 g)
    assert 60.0 <= m["LVEDV"] <= 250.0 and 30.0 <= m["RVEF"] <= 80.0


def test_a_reference_on_too_few_slices_gets_a_note():
    """A stack annotated on one slice: the volumes are scored and the note says what they are. A 2D image has
    pixel areas, not volumes (they were mm^2 / 1000 reported as mL): no measures, and a note saying why."""
    ed, es = _mask(8000, 6000, 9000), _mask(3000, 6000, 4500)
    one_slice = np.zeros_like(es)
    one_slice[2] = es[2]  # the reference ES holds one slice, the prediction the whole stack
    table = clinical_table_from_masks([("A_ED", ed, ed, SPACING), ("A_ES", one_slice, es, SPACING),
                                       ("B_ED", ed[1], ed[1], SPACING[1:]), ("B_ES", es[1], es[1], SPACING[1:])])
    rows = table.set_index("subject")
    assert rows.loc["A", "note"] == ("reference LV on 1 slice(s) at ES; RV on 1 slice(s) at ES: fewer than 3 "
                                     "slices, so its volumes are those slices', not a whole ventricle's")
    assert rows.loc["A", "ref_LVESV"] == pytest.approx(7.5)  # scored all the same: a quarter of the cavity
    assert rows.loc["B", "note"].startswith("2D images: no volumes, so no measures")
    assert np.isnan(rows.loc["B", "ref_LVEF"]) and np.isnan(rows.loc["B", "pred_LVEDV"])


def test_a_single_slice_with_a_small_slice_spacing_is_still_one_slice():
    """A 2D export stored as (1, y, x) with 1 mm between slices: its slice axis is the axis of size 1, not the
    largest spacing (an in-plane axis here), so the reference counts as one slice and gets its note."""
    from autocmr.evaluation.slice_position import slice_profile

    spacing = (1.0, 1.5, 1.5)
    ed, es = _mask(8000, 6000, 9000)[1:2], _mask(3000, 6000, 4500)[1:2]
    rows = clinical_table_from_masks([("C_ED", ed, ed, spacing), ("C_ES", es, es, spacing)]).set_index("subject")
    assert "fewer than 3 slices" in rows.loc["C", "note"]
    profile = slice_profile("C_ED", ed, ed, spacing, {"LV": 1, "MYO": 2, "RV": 3})
    assert profile.n_slices == 1


def test_a_subject_with_one_phase_gets_that_phases_measures_and_a_note():
    """ED alone still gives LVEDV, RVEDV and LVM (as the cine analysis reports them), ES alone the ESVs; EF and
    SV need both, and a second ED case of one subject is still refused."""
    ed, es = _mask(8000, 6000, 9000), _mask(3000, 6000, 4500)
    table = clinical_table_from_masks([("A_ED", ed, ed, SPACING), ("B_ES", es, es, SPACING)])
    rows = table.set_index("subject")
    both = clinical_table_from_masks([("C_ED", ed, ed, SPACING), ("C_ES", es, es, SPACING)]).set_index("subject")
    for measure in ("LVEDV", "RVEDV", "LVM"):
        assert rows.loc["A", f"ref_{measure}"] == pytest.approx(both.loc["C", f"ref_{measure}"])
        assert np.isnan(rows.loc["B", f"ref_{measure}"])
    for measure in ("LVESV", "RVESV"):
        assert rows.loc["B", f"pred_{measure}"] == pytest.approx(both.loc["C", f"pred_{measure}"])
        assert np.isnan(rows.loc["A", f"ref_{measure}"])
    assert all(np.isnan(rows.loc[s, f"ref_{m}"]) for s in "AB" for m in ("LVEF", "RVEF", "LVSV"))
    assert rows.loc["A", "note"] == "no ES case: only the ED measures are scored"
    assert rows.loc["B", "note"] == "no ED case: only the ES measures are scored"
