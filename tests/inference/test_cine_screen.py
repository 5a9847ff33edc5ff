"""The screen of the fast cine path: slice-by-slice bounds on a fast-pass frame's full-accuracy volume, the
near ties they pick, and ruling a frame out on its uncertain slices predicted exactly as the whole frame would
be; a screened frame's mask keeps those slices at full accuracy."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from autocmr.inference.batch import PredictorOptions
from autocmr.inference.cine_screen import SliceScreen, slice_areas, slice_bounds, slice_runs, uncertain_slices
from autocmr.inference.fast_cine import CineOptions, CinePrediction, _frames_to_refine


def test_a_screened_frame_keeps_its_screened_slices_at_full_accuracy(tiny_model_dir):
    predictor = PredictorOptions(device="cpu", mirror=True).build(tiny_model_dir)
    rng = np.random.default_rng(1)
    units = [(rng.normal(size=(1, 6, 32, 32)).astype(np.float32), {}) for _ in range(3)]
    whole = [predictor.probabilities(pre) for pre, _ in units]
    screen = SliceScreen(predictor, units, CineOptions())
    areas = [slice_areas(w) for w in whole]
    for t in range(3):
        screen.fast[t] = areas[t].copy()
        screen.fast[t][1, 2] += 40  # the fast pass parts from full accuracy on slice 2's LV
    screen.full = {0: areas[0], 1: areas[1]}
    # frame 2 at full accuracy is its own volume: ruled out against an ED far larger than it can be
    big = 10 * areas[2][1].sum() + 1000  # on slice 3, where the fast pass and full accuracy agree
    screen.full[0] = areas[0].copy()
    screen.full[0][1, 3] += big
    screen.fast[0][1, 3] += big
    assert screen(2, "ED", 0, 1, 1)
    fast = torch.full_like(whole[2], 0.25)
    out = screen.patched(2, fast)
    # slice 2 holds the full-accuracy probabilities, every other slice the fast pass's, and the input is kept
    torch.testing.assert_close(out[:, 2], whole[2][:, 2])
    assert torch.equal(out[:, [0, 1, 3, 4, 5]], fast[:, [0, 1, 3, 4, 5]]) and torch.all(fast == 0.25)
    assert screen.slices() == {2: [2]} and screen.patched(0, fast).equal(fast)  # frame 0 was not screened
    # how each frame was predicted, in the DICOM-SEG's words, and in predictions.json
    labels = [np.zeros((6, 32, 32), np.uint8)] * 3
    result = CinePrediction(labels, [None] * 3, 0, 1, [0, 1], [1.0] * 3, [1.0] * 3, [], [float("nan")] * 3,
                            screened_frames=[2], screened_slices=screen.slices())
    assert result.phase_notes() == {0: "ED, full accuracy", 1: "ES, full accuracy",
                                    2: "fast pass, 1 slice(s) at full accuracy"}
    assert result.describe()["screened_slices"] == {"2": [2]}


def test_uncertain_slices_and_the_bounds_of_a_screened_frame():
    # two refined frames, 4 slices: the fast pass and full accuracy part on slice 0 only
    fast = np.array([[50, 300, 300, 100], [40, 200, 200, 60.0]])
    full = np.array([[10, 303, 300, 100], [30, 200, 198, 60.0]])
    # slice 0 is off by 40 of 713 voxels (5.6 %) on the first frame; slices 1, 2 by 1 % at most
    assert uncertain_slices(fast, full) == uncertain_slices(fast, full, 0.005) == [0]  # the default share
    assert uncertain_slices(fast, full, 0.015) == [0] and uncertain_slices(fast, full, 0.1) == []
    assert uncertain_slices(fast, full, 0.0025) == [0, 1, 2]  # 3 / 713 and 2 / 488: over a quarter percent
    # a candidate, slice by slice: ratios (slice 1: 1.0-1.01, slice 2: 0.99-1.0, slice 3: 1) or differences
    # (slice 1: 0-3, slice 2: -2-0), whichever interval is wider; slice 0 predicted at full accuracy (12)
    candidate = np.array([60, 250, 250, 90.0])
    low, high = slice_bounds(candidate, fast, full, 0.0, {0: 12.0})
    assert low == pytest.approx(12 + min(250 * 0.99, 248) + 90 + 250)
    assert high == pytest.approx(12 + max(250 * 1.01, 253) + 250 + 90)  # slice 1: + 3 is wider than x 1.01
    low2, high2 = slice_bounds(candidate, fast, full, 0.01, {0: 12.0})
    assert low2 == pytest.approx(12 + (low - 12) * 0.99) and high2 == pytest.approx(12 + (high - 12) * 1.01)
    # slice 0 not predicted: ratios 0.2-0.75 or differences -40 to -10 bound it to 12-50 voxels
    low3, high3 = slice_bounds(candidate, fast, full, 0.0)
    assert (low3 - low, high3 - high) == pytest.approx((12 - 12, 50 - 12))


def test_slice_bounds_catch_a_basal_slice_error_that_whole_volume_ratios_miss():
    # areas of the LV per slice on three frames of the Sunnybrook study with a 96-epoch fold-0 network
    # (network grid): frames 6 and 18 refined; the fast pass draws LV on basal slice 1 where full accuracy
    # draws none (frame 6) or less (frame 18), and by how much differs from frame to frame
    fast6 = [0, 65, 517, 558, 607, 744, 809, 760, 616, 495, 246, 0]
    full6 = [0, 0, 498, 571, 617, 748, 813, 776, 628, 509, 252, 0]
    fast18 = [0, 339, 866, 979, 1052, 1056, 1042, 912, 661, 510, 224, 0]
    full18 = [0, 412, 871, 979, 1057, 1063, 1046, 926, 671, 550, 228, 0]
    fast7 = [0, 236, 510, 549, 602, 751, 800, 754, 611, 508, 246, 0]  # full accuracy: 5380, below frame 6's
    fast, full = np.array([fast6, fast18], float), np.array([full6, full18], float)
    # whole-volume ratios (0.999 and 1.021) put frame 7 at 5561-5682 at least: never below ES (5412)
    ratios = full.sum(axis=1) / fast.sum(axis=1)
    assert sum(fast7) * ratios.min() * (1 - 0.005) > sum(full6)
    # slice by slice, its basal slice may be empty at full accuracy: it could be ES
    low, high = slice_bounds(np.array(fast7, float), fast, full, 0.005)
    assert low < 5380 < high and low < sum(full6)
    assert slice_runs([1, 9], 0, 12) == [(1, 2), (9, 10)] and slice_runs([1, 2, 9], 1, 12) == [(0, 4), (8, 11)]
    assert slice_runs([0, 2], 1, 3) == [(0, 3)] and slice_runs([], 2, 5) == []


def test_the_screen_picks_near_ties_slice_by_slice_and_the_refinement_uses_them(tiny_model_dir):
    predictor = PredictorOptions(device="cpu").build(tiny_model_dir)
    units = [(np.zeros((1, 12, 8, 8), np.float32), {}) for _ in range(3)]
    screen = SliceScreen(predictor, units, CineOptions())

    def areas(lv):
        a = np.zeros((4, 12))
        a[1] = lv
        return a

    # frames 0 and 2 refined (as frames 6 and 18 of the test above), frame 1 as frame 7 there
    screen.fast = {0: areas([0, 65, 517, 558, 607, 744, 809, 760, 616, 495, 246, 0]),
                   1: areas([0, 236, 510, 549, 602, 751, 800, 754, 611, 508, 246, 0]),
                   2: areas([0, 339, 866, 979, 1052, 1056, 1042, 912, 661, 510, 224, 0])}
    screen.full = {0: areas([0, 0, 498, 571, 617, 748, 813, 776, 628, 509, 252, 0]),
                   2: areas([0, 412, 871, 979, 1057, 1063, 1046, 926, 671, 550, 228, 0])}
    assert screen.near_ties(2, 0, 1) == [(1, "ES")]
    assert screen.near_ties(2, 0, 1, excluded={1}) == []
    assert SliceScreen(predictor, units, CineOptions(screen=False)).near_ties(2, 0, 1) is None  # off: whole volumes
    # the refinement takes its candidates from ``ties`` when given, from whole-volume ratios otherwise
    lv, rv = np.array([54.2, 55.7, 76.4]), np.array([20.0, 21.0, 70.0])
    full_lv = {0: 54.1, 1: 53.8, 2: 78.0}
    for ties, expected in ((lambda ed, es, label, excluded: [(1, "ES")] if 1 not in excluded else [], [2, 0, 1]),
                           (None, [2, 0])):
        curve, done = lv.copy(), []
        for frame in _frames_to_refine(curve, rv, done, CineOptions(), [], None, ties):
            curve[frame] = full_lv[frame]
            done.append(frame)
        assert done == expected


@pytest.mark.parametrize("context", [0, 1])
def test_the_screen_predicts_only_the_uncertain_slices_exactly_as_the_whole_frame(tiny_model_dir, context):
    predictor = PredictorOptions(device="cpu", mirror=True).build(tiny_model_dir)
    predictor.config = replace(predictor.config, context_slices=context)
    if context:  # the tiny network takes one channel: give it the context channels' mean
        first = predictor.networks[0]
        predictor.networks = [nn.Sequential(_MeanOfChannels(), first)]
    rng = np.random.default_rng(0)
    units = [(rng.normal(size=(1, 9, 40, 40)).astype(np.float32), {}) for _ in range(3)]
    whole = [slice_areas(predictor.probabilities(pre)) for pre, _ in units]
    options = CineOptions(tie_tolerance=0.01)
    screen = SliceScreen(predictor, units, options)
    # frames 0 and 1 refined; the fast pass "saw" slice 4 of every frame 30 voxels larger in the LV
    for t in range(3):
        screen.fast[t] = whole[t].copy()
        screen.fast[t][1, 4] += 30
    screen.full = {0: whole[0], 1: whole[1]}
    asked = []
    original = predictor.probabilities
    predictor.probabilities = lambda data, window=None: asked.append(data.shape) or original(data, window)
    ruled_out = screen(2, "ED", 0, 1, 1)
    # only slice 4 (with its context neighbours) was predicted, and its area is the whole frame's; the other
    # slices' ratio full/fast was 1 on the refined frames, so frame 2's bounds are its own full-accuracy
    # volume, widened by the margin on the other slices
    assert asked == [(1, 1 + 2 * context, 40, 40)]
    known, rest = whole[2][1, 4], whole[2][1].sum() - whole[2][1, 4]
    low, high = screen.bounds[2]
    assert low == pytest.approx(known + rest * (1 - options.tie_margin))
    assert high == pytest.approx(known + rest * (1 + options.tie_margin))
    assert ruled_out == (high <= whole[0][1].sum() * 1.01) and screen.screened == ({2} if ruled_out else set())
    # more uncertain slices than a third of the frame: refining the frame costs little more, no screen
    for t in range(3):
        screen.fast[t][1, :3] += 30
    assert screen(2, "ED", 0, 1, 1) is False and len(asked) == 1
    # frames cropped differently: slice k is not the same slice everywhere, no screen
    cropped = [(pre, {"bbox": [[t, 9], [0, 40], [0, 40]]}) for t, (pre, _) in enumerate(units)]
    assert not SliceScreen(predictor, cropped, options).enabled and SliceScreen(predictor, units, options).enabled
    # a blank frame keeps the full extent where content frames lose a zero border: it is never a candidate, so
    # it does not switch the screen off
    border = [(pre, {"bbox": [[0, 9], [0 if t == 1 else 1, 40], [0, 40]]}) for t, (pre, _) in enumerate(units)]
    assert not SliceScreen(predictor, border, options).enabled
    assert SliceScreen(predictor, border, options, blank=[1]).enabled


class _MeanOfChannels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)
