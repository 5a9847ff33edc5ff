"""Quality control: exact phantom masks and real manual masks pass; each kind of broken mask is flagged."""
import math

import numpy as np
import pytest

from autocmr.analysis.measures import FrameMask, measure_cine, measure_phases
from autocmr.analysis.qc import QC_FLAGS, QcThresholds, check_subject, describe_flags
from autocmr.dataset.labels import LV, MYO, RV
from autocmr.io.orientation import to_canonical
from autocmr.testing.phantoms import make_phantom_cine, make_phantom_subject

ANATOMY_FLAGS = {"missing_structure", "too_few_slices", "lv_slice_gap", "irregular_lv_profile", "myocardium_open",
                 "rv_not_beside_lv", "fragmented"}


def _pair(seed: int = 0) -> tuple[FrameMask, FrameMask]:
    cases = make_phantom_subject(seed)
    out = []
    for phase in ("ED", "ES"):
        label, spacing, _ = to_canonical(cases[phase].label, cases[phase].geometry)
        out.append(FrameMask(label, spacing, f"s_{phase}", phase=phase, uncertainty=0.01))
    return out[0], out[1]


def _flags(ed: FrameMask, es: FrameMask) -> list[str]:
    return check_subject(measure_phases("s", ed, es)).flags


def _with(frame: FrameMask, label: np.ndarray) -> FrameMask:
    return FrameMask(label, frame.spacing, frame.case, frame.frame, frame.phase, frame.uncertainty)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_phantom_masks_raise_no_flag(seed):
    ed, es = _pair(seed)
    qc = check_subject(measure_phases("s", ed, es))
    assert qc.flags == [], qc.metrics
    assert qc.metrics["myocardial_enclosure_ED"] > 0.95


def test_each_kind_of_broken_mask_is_flagged():
    ed, es = _pair(0)
    no_rv = np.where(ed.label == RV, 0, ed.label)
    assert "missing_structure" in _flags(_with(ed, no_rv), es)
    swapped = ed.label.copy()
    swapped[ed.label == LV], swapped[ed.label == RV] = RV, LV  # a model with the wrong label order
    assert {"myocardium_open"} <= set(_flags(_with(ed, swapped), es))
    order = np.random.default_rng(3).permutation(ed.label.shape[0])
    shuffled = _flags(_with(ed, ed.label[order]), _with(es, es.label[order]))
    assert set(shuffled) & {"lv_slice_gap", "irregular_lv_profile", "fragmented"}, shuffled
    gap = ed.label.copy()
    lv_slices = np.flatnonzero((ed.label == LV).any(axis=(1, 2)))
    gap[lv_slices[len(lv_slices) // 2]] = 0
    assert "lv_slice_gap" in _flags(_with(ed, gap), es)
    island = ed.label.copy()
    island[:3, :12, :12] = MYO  # a sizeable piece of "myocardium" in a corner of the image
    assert "fragmented" in _flags(_with(ed, island), es)
    far_rv = np.where(ed.label == RV, 0, ed.label)
    far_rv[:, :8, :8] = RV  # RV cavity nowhere near the LV
    assert "rv_not_beside_lv" in _flags(_with(ed, far_rv), es)
    assert "esv_not_below_edv" in _flags(es, ed)  # phases swapped: ES larger than ED


def test_measures_out_of_range_and_uncertainty_are_flagged():
    ed, es = _pair(1)
    result = measure_phases("s", ed, es)
    result.measures["LVEF"] = 95.0
    result.measures["LVEDV"] = 900.0
    flags = check_subject(result).flags
    assert {"ef_out_of_range", "implausible_size"} <= set(flags)
    uncertain = measure_phases("s", _with(ed, ed.label), FrameMask(es.label, es.spacing, "s_ES", phase="ES",
                                                                    uncertainty=0.5))
    assert "high_uncertainty" in check_subject(uncertain).flags
    assert "high_uncertainty" not in check_subject(uncertain, QcThresholds(max_uncertainty=0.6)).flags
    assert set(flags) <= set(QC_FLAGS)


def test_cine_curve_rules():
    _, labels, geometry, ed, es = make_phantom_cine(4, n_frames=10)
    spatial = geometry.spatial()
    frames = []
    for t, label in enumerate(labels):
        canonical, spacing, _ = to_canonical(label, spatial)
        frames.append(FrameMask(canonical, spacing, "cine", t))
    smooth = measure_cine("c", frames)
    assert (smooth.ed.frame, smooth.es.frame) == (ed, es)
    assert check_subject(smooth).flags == []
    jumpy = list(frames)
    jumpy[6] = FrameMask(frames[es].label, frames[es].spacing, "cine", 6)  # one frame from another phase
    jumpy[7] = FrameMask(frames[ed].label, frames[ed].spacing, "cine", 7)
    assert "rough_volume_curve" in check_subject(measure_cine("c", jumpy)).flags


def test_a_cine_of_four_frames_or_fewer_is_not_called_rough():
    _, labels, geometry, _, _ = make_phantom_cine(5, n_frames=4)
    frames = [FrameMask(*to_canonical(label, geometry.spatial())[:2], "cine", t) for t, label in enumerate(labels)]
    result = check_subject(measure_cine("c", frames))
    assert "rough_volume_curve" not in result.flags and "lv_curve_roughness" not in result.metrics


def test_a_dip_between_two_equal_peaks_is_seen():
    from autocmr.analysis.qc import _profile_dip

    assert _profile_dip(np.array([10.0, 100, 20, 100, 10])) == pytest.approx(0.8)
    assert _profile_dip(np.array([10.0, 50, 30, 100, 20])) == pytest.approx(0.2)
    assert _profile_dip(np.array([10.0, 60, 100, 70, 20])) == 0.0  # one peak: no dip


def test_only_one_phase_gives_what_can_be_computed_and_a_note():
    ed, _ = _pair(2)
    result = measure_phases("s", ed, None)
    assert result.measures["LVEDV"] > 0 and result.measures["LVM"] > 0 and result.measures["RVEDV"] > 0
    for missing in ("LVESV", "LVSV", "LVEF", "RVESV", "RVEF"):
        assert math.isnan(result.measures[missing])
    assert "only ED given" in result.notes[0]
    assert not set(check_subject(result).flags) & {"esv_not_below_edv", "ef_out_of_range"}


def test_manual_acdc_segmentations_raise_no_anatomical_flag(acdc_root):
    from autocmr.dataset.converters.acdc import read_info_cfg
    from autocmr.dataset.labels import ACDC_TO_AUTOCMR, remap_labels
    from autocmr.io.image import read_image

    for patient in ("patient001", "patient036", "patient061", "patient085", "patient093"):
        info = read_info_cfg(acdc_root / patient / "Info.cfg")
        frames = {}
        for phase in ("ED", "ES"):
            array, geometry = read_image(acdc_root / patient / f"{patient}_frame{int(info[phase]):02d}_gt.nii.gz")
            label, spacing, _ = to_canonical(remap_labels(array, ACDC_TO_AUTOCMR), geometry)
            frames[phase] = FrameMask(label, spacing, patient, phase=phase)
        flags = check_subject(measure_phases(patient, frames["ED"], frames["ES"])).flags
        assert not set(flags) & ANATOMY_FLAGS, (patient, flags)


def test_flag_descriptions_carry_the_limits_in_force():
    default, custom = describe_flags(), describe_flags(QcThresholds(min_lv_length_mm=31.0, max_uncertainty=0.2,
                                                                    ef_range_percent=(10.0, 85.0)))
    assert list(default) == list(custom) == list(QC_FLAGS)  # every flag explained, in the same order
    assert "25 mm" in default["too_few_slices"] and "31 mm" in custom["too_few_slices"]
    assert "0.14" in default["high_uncertainty"] and "0.2" in custom["high_uncertainty"]
    assert "10-85 %" in custom["ef_out_of_range"] and "85 %" in default["myocardium_open"]
    assert custom["lv_slice_gap"] == QC_FLAGS["lv_slice_gap"]  # a rule without a limit keeps its text



def test_a_frame_without_image_content_raises_no_curve_flag():
    """A zero-padded frame is left out of ED/ES (a note says so), which is no doubt about them, and its empty
    mask is no roughness of the volume curve."""
    _, labels, geometry, ed, es = make_phantom_cine(4, n_frames=10)
    spatial = geometry.spatial()
    frames = [FrameMask(*to_canonical(label, spatial)[:2], "cine", t) for t, label in enumerate(labels)]
    padded = frames + [FrameMask(np.zeros_like(frames[0].label), frames[0].spacing, "cine", 10, blank=True)]
    result = measure_cine("c", padded)
    assert (result.ed.frame, result.es.frame) == (ed, es) and result.blank_frames == (10,)
    assert any("no image content" in note for note in result.notes)
    assert check_subject(result).flags == []
    # one frame with content among five blank ones: no ED/ES, and the blank frames are no curve either
    lone = [frames[ed]] + [FrameMask(np.zeros_like(frames[0].label), frames[0].spacing, "cine", t, blank=True)
                           for t in range(1, 6)]
    result = measure_cine("c", lone)
    assert result.blank_frames == (1, 2, 3, 4, 5)
    assert "rough_volume_curve" not in check_subject(result).flags


def test_a_frame_with_content_but_no_lv_is_not_taken_for_end_systole():
    """A frame whose prediction failed (or whose padding is noise, not exactly constant) has no LV: as the
    smallest LV volume it would be ES, LVESV 0 mL and an EF of 100 %. It is left out, as a doubt QC reports."""
    _, labels, geometry, ed, es = make_phantom_cine(4, n_frames=10)
    spatial = geometry.spatial()
    frames = [FrameMask(*to_canonical(label, spatial)[:2], "cine", t) for t, label in enumerate(labels)]
    failed = frames + [FrameMask(np.zeros_like(frames[0].label), frames[0].spacing, "cine", 10)]  # not blank
    result = measure_cine("c", failed)
    assert (result.ed.frame, result.es.frame) == (ed, es)
    assert result.measures["LVESV"] > 0 and result.measures["LVEF"] < 90
    assert any("[10] have no LV segmented" in note for note in result.ed_es_notes)
    assert "ed_es_doubtful" in check_subject(result).flags


def test_a_model_without_rv_gets_no_rv_numbers_and_no_flag_for_the_rv_it_never_draws(tmp_path):
    """A model fine-tuned on LV and myocardium only (a site annotating no RV): RV measures are NaN, not 0 mL,
    and the RV it never draws raises no missing_structure; the structures come from the model's dataset.json."""
    import json

    from autocmr.analysis.pipeline import analyse_masks
    from autocmr.analysis.provenance import segmented_structures

    ed, es = _pair(0)
    no_rv = [_with(frame, np.where(frame.label == RV, 0, frame.label).astype(np.uint8)) for frame in (ed, es)]
    assert "missing_structure" in analyse_masks("s", no_rv).qc.flags  # a 3-class model that lost the RV
    report = analyse_masks("s", no_rv, structures=("LV", "MYO"))
    assert report.qc.flags == []
    assert math.isnan(report.measures.measures["RVEDV"]) and math.isnan(report.measures.measures["RVEF"])
    assert report.measures.measures["LVEDV"] > 0 and any("does not segment RV" in n for n in report.notes)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "LV": 1, "MYO": 2},
                                                       "channel_names": {"0": "cine"}, "numTraining": 1,
                                                       "file_ending": ".nii.gz"}))
    assert segmented_structures({"model": str(tmp_path)}) == ("LV", "MYO")
    assert segmented_structures({"model": str(tmp_path / "gone")}) == ("LV", "MYO", "RV")
