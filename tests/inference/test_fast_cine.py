"""The fast cine path: which frames get full accuracy, that those frames are exactly the full path's, that the
others are exactly a fast pass, that ED/ES are those of the written mask (and, with a network that sees the
blood pool, the phantom's own ED/ES), and the DICOM-SEG output of a predicted DICOM cine."""
from __future__ import annotations

import json
import logging

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from torch import nn

from autocmr.evaluation.phases import find_ed_es
from autocmr.errors import ConfigurationError
from autocmr.inference.batch import PredictorOptions, predict_folder
from autocmr.inference.fast_cine import CineOptions, _fast_probabilities, _frames_to_refine, _locate_heart, heart_window
from autocmr.inference.sliding_window import predict_logits
from autocmr.io.cine import read_cine, write_cine
from autocmr.io.dicom import read_dicom_series
from autocmr.io.image import Geometry
from autocmr.precision import fast_precision
from autocmr.testing.phantoms import make_phantom_cine
from tests.helpers import temporaries
from tests.io.test_dicom_seg import write_series

N_FRAMES = 4
N_SLICES = 2


def refine(fast: tuple[list[float], list[float]], full: tuple[list[float], list[float]],
           options: CineOptions = CineOptions(), screen=None) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    """Drive the refinement as predict_cine_fast does, with given fast and full-accuracy volume curves."""
    lv, rv = np.array(fast[0], float), np.array(fast[1], float)
    done: list[int] = []
    notes: list[str] = []
    for frame in _frames_to_refine(lv, rv, done, options, notes, screen):
        lv[frame], rv[frame] = full[0][frame], full[1][frame]
        done.append(frame)
    return done, notes, lv, rv


def test_refinement_follows_ed_es_until_they_are_full_accuracy_frames():
    rv = [50, 45, 30, 35, 48, 50]
    # fast: ED 0, ES 2. Full accuracy shrinks frame 0 below frame 5 and frame 2 above frame 3.
    fast_lv = [100, 90, 60, 62, 95, 99]
    full_lv = [97, 89, 64, 61, 94, 98]
    done, notes, lv, _ = refine((fast_lv, rv), (full_lv, rv))
    # ED/ES move to 5 and 3; then frame 4 is a near tie of ED: its fast volume (95) times the largest full/fast
    # ratio seen (frame 2: 64 / 60) could exceed ED's 98; frame 1 (90) could not.
    assert done == [0, 2, 5, 3, 4] and not notes
    ed, es, _ = find_ed_es(lv, rv)
    assert (ed, es) == (5, 3) and {ed, es} <= set(done)
    # same curves, no extra frame allowed: the cap leaves near ties to the fast pass (a note names them), never
    # ED or ES: the frames that became ED/ES in the curve (5, 3) are refined beyond it
    done, notes, lv, _ = refine((fast_lv, rv), (full_lv, rv), CineOptions(max_extra_frames=0))
    assert done == [0, 2, 5, 3] and "frames [4] stay fast-pass only" in notes[0]
    assert set(find_ed_es(lv, rv)[:2]) <= set(done)
    # when the fast and full curves agree, only ED and ES are refined (no frame within 0.5 % of them)
    assert refine((fast_lv, rv), (fast_lv, rv))[0] == [0, 2]
    # with no tolerance for near ties, frame 1 (90 x 1.072 = 96.5, 1.5 % below ED's 98) still is not one
    assert refine((fast_lv, rv), (full_lv, rv), CineOptions(tie_tolerance=0.0))[0] == [0, 2, 5, 3, 4]


def test_a_shared_bias_of_the_fast_pass_is_not_taken_for_near_ties():
    rv = [50, 45, 30, 31, 40, 45]
    fast_lv = [100, 96, 60, 62, 80, 90]
    full_lv = [v * 1.02 for v in fast_lv]  # full accuracy 2 % larger everywhere: the order does not change
    # frame 3 (62) is 2 % above ES at full accuracy (61.2), but 2 % is the shared bias: 62 x 1.02 cannot get
    # below 61.2. (An error bound of +-2 % per frame would have refined it.)
    assert refine((fast_lv, rv), (full_lv, rv))[0] == [0, 2]
    # a fast frame whose raw volume is below the refined ES is refined whatever the bias: ED/ES read from the
    # written mask must be full-accuracy frames
    fast_lv[3] = 61.0
    done, _, lv, _ = refine((fast_lv, rv), ([v * 1.02 for v in fast_lv], rv))
    assert done == [0, 2, 3] and find_ed_es(lv, rv)[:2] == (0, 2)


def test_the_frame_cap_never_leaves_ed_or_es_to_the_fast_pass():
    # a long end-diastolic plateau that the fast pass draws 3 mL too large everywhere (no screen, as for a 3D
    # model): each refined plateau frame falls below the next fast one, which then is ED in the curve
    fast_lv = [150 - 0.3 * t for t in range(10)] + [100 - 2 * t for t in range(10)]
    full_lv = [v - 3 for v in fast_lv]
    rv = [60.0] * 20
    done, notes, lv, _ = refine((fast_lv, rv), (full_lv, rv), CineOptions(max_extra_frames=2))
    ed, es, _ = find_ed_es(lv, rv)
    assert ed in done and es in done and len(done) > 4  # beyond the cap of 2 + 2 frames
    assert lv[ed] == max(full_lv)  # the full path's end-diastolic volume


def test_a_near_tie_of_ed_is_refined_and_can_win():
    rv = [50, 50, 30, 35, 48, 49]
    fast_lv = [100, 99.8, 60, 70, 95, 97]
    # frame 1 is the true ED, 3 % above frame 0; the fast pass put it 0.2 % below. ES's full/fast ratio (1.05)
    # says the fast pass can be 5 % off, so frame 1 could beat ED by more than the 1 % tolerance
    full_lv = [100, 103, 63, 70, 95, 97]
    done, notes, lv, _ = refine((fast_lv, rv), (full_lv, rv))
    assert done == [0, 2, 1] and not notes and find_ed_es(lv, rv)[:2] == (1, 2)


def test_a_near_tie_that_cannot_move_a_volume_by_more_than_the_tolerance_stays_fast():
    rv = [50, 50, 30, 35, 48, 49]
    fast_lv = [100, 99.8, 60, 62, 95, 97]
    full_lv = [100, 100.5, 60, 62, 95, 97]  # frame 1 is ED at full accuracy, but only 0.5 % above frame 0
    done, notes, lv, _ = refine((fast_lv, rv), (full_lv, rv))
    assert done == [0, 2] and not notes
    assert abs(lv[find_ed_es(lv, rv)[0]] - max(full_lv)) <= 0.01 * max(full_lv)  # EDV within 1 % of the full path's
    # without the tolerance it is refined and wins
    done, _, lv, _ = refine((fast_lv, rv), (full_lv, rv), CineOptions(tie_tolerance=0.0))
    assert done == [0, 2, 1] and find_ed_es(lv, rv)[:2] == (1, 2)


def test_a_screened_out_near_tie_is_not_refined_and_the_next_candidate_is_considered():
    rv = [50, 50, 30, 35, 48, 49]
    fast_lv = [100, 99.8, 60, 70, 95, 97]
    full_lv = [100, 103, 63, 70, 95, 97]  # as in the test above: frame 1 is a near tie of ED, then 5
    asked = []

    def screen(frame, side, ed, es, label):
        asked.append((frame, side, ed, es, label))
        return frame == 1  # its uncertain slices say it cannot beat ED by more than the tolerance

    done, notes, lv, _ = refine((fast_lv, rv), (full_lv, rv), screen=screen)
    # frame 1 ruled out; the next ED candidate (5: 97 x 1.05 could beat 100 by > 1 %) is screened, then refined
    assert asked == [(1, "ED", 0, 2, 1), (5, "ED", 0, 2, 1)] and done == [0, 2, 5] and not notes
    assert find_ed_es(lv, rv)[:2] == (0, 2)
    # a screen that rules out every candidate leaves only ED and ES refined
    assert refine((fast_lv, rv), (full_lv, rv), screen=lambda *a: True)[0] == [0, 2]


def test_a_fast_frame_beating_the_refined_ed_is_screened_before_it_is_refined():
    rv = [50, 50, 30, 35, 48, 49]
    fast_lv = [100, 90, 60, 70, 95, 99.7]  # fast ED 0; at full accuracy (99.5) frame 5's fast volume beats it
    full_lv = [99.5, 90, 61, 70, 95, 99.8]
    patched = {5: 99.6}  # frame 5's mask with its screened slices at full accuracy
    lv, rv_ = np.array(fast_lv), np.array(rv, float)
    done: list[int] = []
    asked = []

    def screen(frame, side, ed, es, label):
        asked.append((frame, side, ed, es))
        if frame not in patched:
            return False
        lv[frame] = patched[frame]  # as predict_cine_fast's screen writes the patched mask's volumes
        return True

    for frame in _frames_to_refine(lv, rv_, done, CineOptions(), [], screen):
        lv[frame] = full_lv[frame]
        done.append(frame)
    # frame 5 was screened against the refined ED (0) and ES (2) before it was refined; its patched mask
    # (99.6) still beats ED's 99.5, so it is refined after all and is ED
    assert asked[0] == (5, "ED", 0, 2) and done == [0, 2, 5] and find_ed_es(lv, rv_)[:2] == (5, 2)
    assert [a[0] for a in asked].count(5) == 1  # screened once: the second time it is refined
    # a patch that brings it below ED settles it without refining the frame
    patched[5] = 99.2
    lv, done, asked = np.array(fast_lv), [], []
    for frame in _frames_to_refine(lv, rv_, done, CineOptions(), [], screen):
        lv[frame] = full_lv[frame]
        done.append(frame)
    assert asked[0] == (5, "ED", 0, 2) and done == [0, 2] and find_ed_es(lv, rv_)[:2] == (0, 2)
    # two challengers at once (frame 6 beats ES): 5 is ruled out, 6 is not; each is screened once, 6 refined
    fast6, full6 = fast_lv + [60.5], full_lv + [60.6]
    lv, rv6, done, asked = np.array(fast6), np.array(rv + [31.0]), [], []
    for frame in _frames_to_refine(lv, rv6, done, CineOptions(), [], screen):
        lv[frame] = full6[frame]
        done.append(frame)
    assert sorted(a[:2] for a in asked) == [(5, "ED"), (6, "ES")] and done == [0, 2, 6]
    assert find_ed_es(lv, rv6)[:2] == (0, 6)
    # without a screen it is refined straight away (as before the screen)
    assert refine((fast_lv, rv), (full_lv, rv))[0][:3] == [0, 2, 5]


def test_no_ventricle_in_the_fast_pass_means_every_frame_at_full_accuracy():
    empty = [0.0] * 4
    done, notes, _, _ = refine((empty, empty), ([5, 3, 2, 4], empty))
    assert done == [0, 1, 2, 3] and "no ventricle" in notes[0]


def test_a_ventricle_only_the_fast_pass_saw_means_the_full_path_not_a_crash():
    # noise the fast pass takes for an LV in frames 1 and 2; full accuracy finds nothing anywhere
    empty = [0.0] * 4
    done, notes, lv, _ = refine(([0, 5, 3, 0], empty), (empty, empty))
    assert sorted(done) == [0, 1, 2, 3] and done[:2] == [1, 0] and not lv.any()  # ED, ES first
    assert notes == ["full accuracy found no LV where the fast pass did: every frame predicted at full accuracy"]
    # an LV at full accuracy where the fast pass saw none is still found (the remaining frames are refined)
    done, notes, lv, _ = refine(([0, 5, 3, 0], empty), ([0, 0, 0, 7], empty))
    assert sorted(done) == [0, 1, 2, 3] and find_ed_es(lv)[:2] == (3, 0)


def test_cine_options_are_checked():
    with pytest.raises(ConfigurationError, match="cine mode must be one of"):
        CineOptions(mode="quick")
    with pytest.raises(ConfigurationError, match="fast_step"):
        CineOptions(fast_step=0.0)
    with pytest.raises(ConfigurationError, match="tie_tolerance"):
        CineOptions(tie_tolerance=1.0)
    with pytest.raises(ConfigurationError, match="fast_region must be one of"):
        CineOptions(fast_region="lv")


def _phantom_cine(folder, seed: int = 2):
    image, labels, g4, ed, es = make_phantom_cine(seed, n_frames=N_FRAMES, fov_mm=120.0)
    start = (image.shape[1] - N_SLICES) // 2  # a few mid-ventricular slices keep the test fast
    image, labels = image[:, start:start + N_SLICES], labels[:, start:start + N_SLICES]
    geometry = Geometry(g4.size[:2] + (N_SLICES,) + g4.size[3:], g4.spacing, g4.origin, g4.direction)
    write_cine(image, geometry, folder / "cine.nii.gz")
    return labels, geometry, ed, es


def _volume_curves(mask: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    voxel_ml = float(np.prod(geometry.spacing[:3])) / 1000.0
    return (mask == 1).sum(axis=(1, 2, 3)) * voxel_ml, (mask == 3).sum(axis=(1, 2, 3)) * voxel_ml


def test_fast_frames_are_a_fast_pass_and_ed_es_frames_are_the_full_path(tmp_path, tiny_model_dir):
    _, geometry, _, _ = _phantom_cine(tmp_path / "in")
    full = PredictorOptions(device="cpu", mirror=True).build(tiny_model_dir)  # "full accuracy": mirrored
    run = {mode: predict_folder(tmp_path / "in", tmp_path / mode, full, num_workers=0,
                                cine=CineOptions(mode=mode, fast_region="whole")) for mode in ("fast", "full")}
    # the fast pass over whole slices: no mirroring, touching tiles, and the fast precision (bf16 on AMX CPUs)
    fast_settings = PredictorOptions(device="cpu", mirror=False, step=1.0,
                                     precision=fast_precision(torch.device("cpu"))).build(tiny_model_dir)
    predict_folder(tmp_path / "in", tmp_path / "reference", fast_settings, num_workers=0,
                   cine=CineOptions(mode="full"))
    assert all(r.ok for r in run.values())
    masks = {name: read_cine(tmp_path / name / "cine.nii.gz")[0] for name in ("fast", "full", "reference")}
    assert masks["fast"].shape == (N_FRAMES, N_SLICES) + masks["fast"].shape[2:]
    record = json.loads((tmp_path / "fast" / "predictions.json").read_text())["cases"]["cine"]["cine"]
    full_frames = record["full_accuracy_frames"]
    assert record == run["fast"].cine["cine"] and "cine" not in run["full"].cine
    # a screened frame is the fast pass with its screened slices at full accuracy (test above): neither mask
    assert sorted(int(t) for t in record["screened_slices"]) == record["screened_frames"]
    for t in set(range(N_FRAMES)) - set(record["screened_frames"]):
        expected = masks["full"][t] if t in full_frames else masks["reference"][t]
        np.testing.assert_array_equal(masks["fast"][t], expected, err_msg=f"frame {t}")
    # ED/ES are those of the written mask's volume curves, and (unless a note says otherwise) full accuracy
    lv, rv = _volume_curves(masks["fast"], geometry)
    np.testing.assert_allclose(record["lv_ml"], lv, atol=1e-3)
    assert lv.any()  # the tiny model finds an LV in the phantom: the checks below are not skipped
    assert (record["ed_frame"], record["es_frame"]) == find_ed_es(lv, rv)[:2]
    assert {record["ed_frame"], record["es_frame"]} <= set(full_frames) or record["notes"]
    uncertainty = run["fast"].uncertainty["cine"]
    assert all(np.isnan(uncertainty[t]) != (t in full_frames) for t in range(N_FRAMES))


def test_heart_window_centres_one_patch_on_the_largest_component_of_the_frames():
    a = np.zeros((3, 100, 120), np.uint8)
    a[1, 40:50, 60:80] = 1  # the heart of frame 0...
    a[0, 0:3, 0:3] = 3  # ...and a small stray component in a corner, ignored
    b = np.zeros_like(a)
    b[2, 44:56, 62:84] = 2  # the heart of the other frame, moved
    # union box y 40..56, x 60..84, margin 2: widened to the 32 x 32 patch around its centre
    assert heart_window([a, b], (32, 32), (2, 2)) == ((32, 64), (56, 88))
    # a heart wider than the patch: box plus margin on each side
    assert heart_window([a, b], (8, 8), (2, 2)) == ((38, 58), (58, 86))
    # moved inside the image at a border, and as wide as the image where the patch is wider
    c = np.zeros_like(a)
    c[0, 95:100, 0:5] = 1
    assert heart_window([c], (32, 200), (2, 2)) == ((68, 100), (0, 120))
    assert heart_window([np.zeros_like(a)], (32, 32), (2, 2)) is None  # no heart: the caller tiles whole slices


def test_the_fast_pass_in_a_window_is_the_windows_prediction_with_background_outside(tiny_predictor):
    patch = tiny_predictor.config.patch_size
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1, 2, patch[0] + 30, patch[1] + 20)).astype(np.float32)
    window = ((10, 10 + patch[0]), (5, 5 + patch[1]))
    options = CineOptions(fast_step=1.0)
    got = _fast_probabilities(tiny_predictor, data, options, window)
    crop = torch.from_numpy(data[..., 10:10 + patch[0], 5:5 + patch[1]].copy())
    logits = predict_logits(tiny_predictor.networks[0], crop, patch_size=patch,
                            num_classes=tiny_predictor.model.num_classes(), step=1.0, mirror_axes=(), device="cpu",
                            precision=options.resolved_fast_precision(torch.device("cpu")))
    assert got.shape == (tiny_predictor.model.num_classes(),) + data.shape[1:]
    torch.testing.assert_close(got[:, :, 10:10 + patch[0], 5:5 + patch[1]], torch.softmax(logits, 0))
    outside = torch.ones(data.shape[1:], dtype=torch.bool)
    outside[:, 10:10 + patch[0], 5:5 + patch[1]] = False
    assert (got[0][outside] == 1).all() and (got[1:][:, outside] == 0).all()


def test_frames_of_different_shapes_get_no_window(tiny_predictor):
    # preprocessing crops each frame to its own non-zero box: one window cannot serve frames cropped differently
    patch = tiny_predictor.config.patch_size
    units = [(np.ones((1, 2, patch[0] + 4, patch[1] + 4), np.float32), {}),
             (np.ones((1, 2, patch[0] + 6, patch[1] + 4), np.float32), {})]
    assert _locate_heart(tiny_predictor, units, CineOptions()) is None


def test_a_blank_frame_of_another_size_does_not_cost_the_window(tiny_predictor, monkeypatch):
    """A zero frame keeps its full size (nothing to crop) while the others are cropped by their zero border:
    blank frames take no part in the fast pass, so their shape must not drop the heart window either."""
    import autocmr.inference.fast_cine as fast_cine

    patch = tiny_predictor.config.patch_size
    found = ((0, patch[0]), (0, patch[1]))
    monkeypatch.setattr(fast_cine, "heart_window", lambda labels, patch_size, margin: found)
    cropped = (np.ones((1, 2, patch[0] + 4, patch[1] + 4), np.float32), {})
    whole = (np.zeros((1, 2, patch[0] + 6, patch[1] + 6), np.float32), {})
    assert _locate_heart(tiny_predictor, [cropped, cropped, whole, cropped], CineOptions(), blank=[2]) == found
    assert _locate_heart(tiny_predictor, [cropped, cropped, whole, cropped], CineOptions()) is None


def test_the_heart_window_keeps_the_full_accuracy_frames_and_is_recorded(tmp_path, tiny_model_dir):
    _phantom_cine(tmp_path / "in")
    full = PredictorOptions(device="cpu", mirror=True).build(tiny_model_dir)
    run = {region: predict_folder(tmp_path / "in", tmp_path / region, full, num_workers=0,
                                  cine=CineOptions(fast_region=region)) for region in ("heart", "whole")}
    reference = predict_folder(tmp_path / "in", tmp_path / "full", full, num_workers=0, cine=CineOptions(mode="full"))
    assert reference.ok and all(r.ok for r in run.values())
    masks = {name: read_cine(tmp_path / name / "cine.nii.gz")[0] for name in ("heart", "full")}
    record = json.loads((tmp_path / "heart" / "predictions.json").read_text())["cases"]["cine"]["cine"]
    for t in record["full_accuracy_frames"]:
        np.testing.assert_array_equal(masks["heart"][t], masks["full"][t], err_msg=f"frame {t}")
    window = record["fast_window"]  # the tiny model finds the phantom's heart (its masks hold foreground)
    assert masks["full"].any() and window is not None and len(window) == 2
    assert all(0 <= lo < hi <= n for (lo, hi), n in zip(window, masks["heart"].shape[2:]))
    assert run["whole"].cine["cine"]["fast_window"] is None


class BloodPoolNet(nn.Module):
    """A stand-in network that calls every bright, smooth region "LV": on the phantoms that is the blood of both
    ventricles, whose volume is largest at ED and smallest at ES. Deterministic, so ED/ES are known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
        blood = 8.0 * (smooth[:, :1] - 1.0)
        zeros = torch.zeros_like(blood)
        return torch.cat([zeros, blood, zeros - 10.0, zeros - 10.0], dim=1)


def test_fast_path_finds_the_phantoms_ed_and_es(tmp_path, tiny_model_dir):
    _, _, ed, es = _phantom_cine(tmp_path / "in", seed=5)
    predictor = PredictorOptions(device="cpu", mirror=False, postprocess="off").build(tiny_model_dir)
    predictor.networks = [BloodPoolNet().eval()]
    report = predict_folder(tmp_path / "in", tmp_path / "out", predictor, num_workers=0)
    record = report.cine["cine"]
    assert (record["ed_frame"], record["es_frame"]) == (ed, es) == (0, N_FRAMES // 3)
    assert record["full_accuracy_frames"] == [ed, es]


def test_dicom_cine_gets_nifti_and_a_seg_per_phase(tmp_path, tiny_predictor):
    write_series(tmp_path / "in" / "study", n_phases=3, n_slices=2)
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0,
                            output_format="both")
    assert report.ok and report.done == ["study_s4"]
    mask = read_cine(tmp_path / "out" / "study_s4.nii.gz")[0]
    volume = read_dicom_series(tmp_path / "in" / "study")
    record = report.cine["study_s4"]
    for t in range(3):
        seg = hd.seg.segread(tmp_path / "out" / "study_s4_seg" / f"phase_{t:02d}.dcm")
        uids = [_uid(volume.files[(z, t)]) for z in range(2)]
        np.testing.assert_array_equal(seg.get_pixels_by_source_instance(uids, combine_segments=True), mask[t])
        screened = record["screened_slices"].get(str(t))
        expected = ("full accuracy" if t in record["full_accuracy_frames"] else
                    f"fast pass, {len(screened)} slice(s) at full accuracy" if screened else "fast pass")
        assert seg.ContentDescription.endswith(expected)
    assert not temporaries(tmp_path / "out")


def _uid(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_dicom_seg_only_skips_nifti_for_dicom_and_continue_sees_it(tmp_path, tiny_predictor, caplog):
    write_series(tmp_path / "in" / "stack", n_phases=1, n_slices=2)
    _phantom_cine(tmp_path / "in")
    with caplog.at_level(logging.WARNING):
        report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0,
                                output_format="dicom-seg")
    assert report.ok and sorted(report.done) == ["cine", "stack_s4"]
    assert "DICOM-SEG needs a DICOM source series; 1 input(s)" in caplog.text
    assert (tmp_path / "out" / "stack_s4_seg.dcm").is_file() and not (tmp_path / "out" / "stack_s4.nii.gz").exists()
    assert (tmp_path / "out" / "cine.nii.gz").is_file()  # a NIfTI input still gets its NIfTI mask
    again = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0,
                           output_format="dicom-seg", continue_=True)
    assert sorted(again.skipped) == ["cine", "stack_s4"] and not again.done
    # the analysis cannot measure a SEG-only case, and says so in its tables instead of leaving it out
    from autocmr.analysis.pipeline import analyse_batch
    from autocmr.inference.inputs import discover_jobs

    jobs = discover_jobs(tmp_path / "in", tmp_path / "out").jobs
    rows = {r.subject: r for r in analyse_batch(again, jobs, tmp_path / "in").reports}
    assert "not analysed: --output-format dicom-seg" in rows["stack_s4"].notes[0]


def test_a_predictor_as_fast_as_the_fast_pass_predicts_each_frame_once(tiny_model_dir):
    from autocmr.inference.fast_cine import _fast_pass_is_full_accuracy

    def build(**kwargs):
        return PredictorOptions(device="cpu", **kwargs).build(tiny_model_dir)

    fast = fast_precision(torch.device("cpu"))
    assert _fast_pass_is_full_accuracy(build(mirror=False, step=1.0, precision=fast), CineOptions())
    assert _fast_pass_is_full_accuracy(build(mirror=False, step=1.0, precision="fp32"),
                                       CineOptions(fast_precision="fp32"))
    # a predictor in float32 is more accurate than a bfloat16 fast pass (on CPUs that run one)
    assert _fast_pass_is_full_accuracy(build(mirror=False, step=1.0, precision="fp32"), CineOptions()) == (
        fast == "fp32")
    assert not _fast_pass_is_full_accuracy(build(mirror=True, step=1.0), CineOptions())
    assert not _fast_pass_is_full_accuracy(build(mirror=False, step=0.5), CineOptions())


def test_cli_output_format_and_cine_flags_reach_the_batch(tmp_path, tiny_model_dir):
    from autocmr.cli.predict import main

    write_series(tmp_path / "in" / "stack", n_phases=2, n_slices=2)
    argv = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(tiny_model_dir), "--device", "cpu",
            "--no-mirror", "-j", "0", "--no-analysis", "--output-format", "dicom-seg", "--cine", "full"]
    assert main(argv) == 0
    assert (tmp_path / "out" / "stack_s4_seg").is_dir() and not (tmp_path / "out" / "stack_s4.nii.gz").exists()
    case = json.loads((tmp_path / "out" / "predictions.json").read_text())["cases"]["stack_s4"]
    assert "cine" not in case and case["seconds"]["frames"] == 2  # --cine full: frame by frame, no fast path


def test_cli_cine_fast_region_reaches_the_fast_pass(tmp_path, tiny_model_dir, monkeypatch):
    import autocmr.inference.fast_cine as fast_cine
    from autocmr.cli.predict import main

    located = []
    monkeypatch.setattr(fast_cine, "_locate_heart", lambda *args: located.append(args) or ((0, 8), (0, 8)))
    write_series(tmp_path / "in" / "stack", n_phases=2, n_slices=2)
    for region in ("heart", "whole"):
        argv = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / region), "-m", str(tiny_model_dir), "--device", "cpu",
                "-j", "0", "--no-analysis"] + (["--cine-fast-region", region] if region == "whole" else [])
        assert main(argv) == 0
        case = json.loads((tmp_path / region / "predictions.json").read_text())["cases"]["stack_s4"]
        assert case["cine"]["fast_window"] == ([[0, 8], [0, 8]] if region == "heart" else None)
    assert len(located) == 1  # the default looked for the heart, --cine-fast-region whole did not


def test_predictor_in_a_window_predicts_the_crop_with_background_outside(tiny_model_dir):
    # the full-accuracy settings (mirroring) inside a window: the window's own prediction, background outside,
    # and a window spanning the whole image changes nothing
    from autocmr.inference.predictor import PredictorOptions

    predictor = PredictorOptions(device="cpu", mirror=True).build(tiny_model_dir)
    patch = predictor.config.patch_size
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1, 2, patch[0] + 12, patch[1] + 9)).astype(np.float32)
    window = ((6, 6 + patch[0]), (3, 3 + patch[1]))
    crop = np.ascontiguousarray(data[..., 6:6 + patch[0], 3:3 + patch[1]])
    got, uncertainty = predictor.probabilities_and_uncertainty(data, window)
    want, want_uncertainty = predictor.probabilities_and_uncertainty(crop)
    assert got.shape == (predictor.model.num_classes(),) + data.shape[1:]
    torch.testing.assert_close(got[:, :, 6:6 + patch[0], 3:3 + patch[1]], want)
    assert uncertainty == pytest.approx(want_uncertainty)
    torch.testing.assert_close(predictor.probabilities(data, window), got)
    assert (got[0, :, :6] == 1).all() and (got[1:, :, :, 3 + patch[1]:] == 0).all()
    whole = ((0, data.shape[2]), (0, data.shape[3]))
    torch.testing.assert_close(predictor.probabilities(data, whole), predictor.probabilities(data))


def test_cli_cine_screen_reaches_the_fast_path(tmp_path, tiny_model_dir, monkeypatch):
    import autocmr.inference.batch_scheduler as scheduler
    from autocmr.cli.predict import main

    seen = []
    original = scheduler.predict_cine_fast
    monkeypatch.setattr(scheduler, "predict_cine_fast",
                        lambda *args, options, **kw: seen.append((options.screen, options.tie_tolerance))
                        or original(*args, options=options, **kw))
    write_series(tmp_path / "in" / "stack", n_phases=2, n_slices=2)
    for i, flag in enumerate(([], ["--cine-screen", "off"], ["--cine-tie-tolerance", "0.25"])):
        argv = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / f"out{i}"), "-m", str(tiny_model_dir),
                "--device", "cpu", "-j", "0", "--no-analysis"] + flag
        assert main(argv) == 0
        record = json.loads((tmp_path / f"out{i}" / "predictions.json").read_text())
        assert "screened_frames" in record["cases"]["stack_s4"]["cine"]
        cine = record["predictor"]["cine"]  # how the batch's cines were predicted
        assert cine["tie_tolerance"] == seen[-1][1] and cine["mode"] == "fast"
    assert seen == [(True, 0.01), (False, 0.01), (True, 0.0025)]  # the tolerance is given in percent


def test_cli_refuses_a_tie_tolerance_outside_0_to_100_percent(tmp_path, capsys):
    from autocmr.cli.predict import main

    for value, reason in (("150", "a percentage in [0, 100)"), ("-1", "a percentage in [0, 100)"),
                          ("one", "not a number")):
        with pytest.raises(SystemExit) as stopped:
            main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--cine-tie-tolerance", value])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert "--cine-tie-tolerance" in err and reason in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_frame_ruled_out_by_the_screen_but_refined_after_all_is_recorded_once(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    """Step 5: the screen rules a challenger out, its patched volume still beats ED, so it is refined: the
    record lists it as full accuracy only (it said both, with screened slices of a mask no longer written)."""
    from autocmr.inference import fast_cine
    from autocmr.inference.cine_screen import SliceScreen

    def ruled_out(self, frame, side, ed, es, label):
        self.screened.add(frame)
        self.exact[frame] = {}
        return True

    def refine_after_screening(lv, rv, full, options, notes, screen, near_ties, blank):
        assert screen(1, "ED", 0, 2, 1)  # ruled out, patched...
        yield from (0, 1, 2)  # ...and refined all the same

    monkeypatch.setattr(SliceScreen, "__call__", ruled_out)
    monkeypatch.setattr(fast_cine, "_frames_to_refine", refine_after_screening)
    _phantom_cine(tmp_path / "in", seed=5)
    predictor = PredictorOptions(device="cpu", mirror=False, postprocess="off").build(tiny_model_dir)
    record = predict_folder(tmp_path / "in", tmp_path / "out", predictor, num_workers=0).cine["cine"]
    assert record["full_accuracy_frames"] == [0, 1, 2]
    assert record["screened_frames"] == [] and record["screened_slices"] == {}


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_slice_no_image_fills_is_background_in_masks_probabilities_and_curves(tmp_path, tiny_predictor,
                                                                                 monkeypatch, mode):
    """A DICOM stack with a slice missing (autocmr.io.dicom fills it with zeros): nothing is segmented there, in
    the mask, in the saved probabilities and in the volume curves the fast path finds ED/ES on."""
    import dataclasses

    from autocmr.inference import batch_scheduler

    _, geometry, _, _ = _phantom_cine(tmp_path / "in")
    load = batch_scheduler.load_job
    monkeypatch.setattr(batch_scheduler, "load_job",
                        lambda job, ctx: dataclasses.replace(load(job, ctx), missing_slices=[0]))
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0,
                            cine=CineOptions(mode=mode, fast_region="whole"), save_probabilities=True)
    assert report.ok
    mask = read_cine(tmp_path / "out" / "cine.nii.gz")[0]
    assert not mask[:, 0].any() and mask[:, 1].any()
    probabilities = np.load(tmp_path / "out" / "cine_probabilities.npz")["probabilities"]  # (t, c, z, y, x)
    assert np.all(probabilities[:, 0, 0] == 1) and not probabilities[:, 1:, 0].any()
    if mode == "fast":
        np.testing.assert_allclose(report.cine["cine"]["lv_ml"], _volume_curves(mask, geometry)[0], atol=1e-3)
