"""Planner rules on hand-made fingerprints (no files)."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.errors import ConfigurationError, PlansError
from autocmr.planners.fingerprint import CaseFingerprint, Fingerprint
from autocmr.planners.planner import CPU, GPU, fullres_spacing, misplaced_slice_axes, plan, transpose_order
from autocmr.planners.plans import IntensityStats, Plans
from autocmr.planners.topology import make_topology
from autocmr.networks.unet import training_flops

LABELS = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}


def cine_fingerprint(spacings, shapes, name="Dataset900_Test") -> Fingerprint:
    cases = tuple(CaseFingerprint(f"c{i}", tuple(map(float, sp)), tuple(sh), tuple(sh), (0, 1, 2, 3), 1.0)
                  for i, (sp, sh) in enumerate(zip(spacings, shapes)))
    stats = (IntensityStats(100.0, 50.0, 90.0, 5.0, 300.0, 0.0, 400.0),)
    return Fingerprint(name, LABELS, {"0": "cineMRI"}, cases, stats, "sig")


def acdc_like(n=20, seed=0) -> Fingerprint:
    rng = np.random.default_rng(seed)
    inplane = rng.choice([1.25, 1.4, 1.5625, 1.6, 1.8], size=n)
    thick = rng.choice([5.0, 6.5, 10.0, 10.0, 10.0], size=n)
    spacings = [(t, p, p) for t, p in zip(thick, inplane)]
    shapes = [(int(rng.integers(7, 12)), int(rng.integers(200, 260)), int(rng.integers(200, 260))) for _ in range(n)]
    return cine_fingerprint(spacings, shapes)


def test_2d_target_spacing_is_median_in_plane_and_keeps_slices_native():
    fp = acdc_like()
    plans = plan(fp)
    c2d = plans.configuration("2d")
    spacings = fp.spacings()
    assert c2d.spacing[1:] == pytest.approx(tuple(np.median(spacings[:, 1:], axis=0)))
    assert not c2d.resampling.resample_through_plane
    assert c2d.dim == 2 and len(c2d.patch_size) == 2


def test_3d_keeps_through_plane_axis_anisotropic_with_tenth_percentile_rule():
    fp = acdc_like()
    c3d = plan(fp).configuration("3d_fullres")
    z = fp.spacings()[:, 0]
    assert c3d.spacing[0] == pytest.approx(max(np.percentile(z, 10), max(c3d.spacing[1:]) + 1e-5))
    assert c3d.spacing[0] > 3 * c3d.spacing[1]  # still anisotropic
    assert c3d.resampling.anisotropic and c3d.resampling.resample_through_plane
    # coarse axis: 1-wide kernels before in-plane pooling has caught up
    assert c3d.topology.kernels[0][0] == 1 and c3d.topology.kernels[0][1:] == (3, 3)


def test_isotropic_data_use_plain_median():
    sp = [(1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (1.1, 1.1, 1.1)]
    t = fullres_spacing(np.array(sp), np.array([[100, 100, 100]] * 3, float))
    assert t == pytest.approx([1.1, 1.1, 1.1])


def test_transpose_puts_coarsest_axis_first():
    assert transpose_order(np.array([1.5, 10.0, 1.5])) == (1, 0, 2)
    assert transpose_order(np.array([8.0, 1.2, 1.2])) == (0, 1, 2)


def test_cases_whose_slice_axis_the_dataset_order_does_not_put_first_are_named(caplog):
    """Mostly near-isotropic volumes with a coarser y axis, plus two thick-slice stacks: the dataset order puts
    y first, so the stacks' slice axis (canonical axis 0) ends second, and planning says so."""
    spacings = [(1.0, 1.6, 1.0)] * 5 + [(8.0, 1.5, 1.5)] * 2
    shapes = [(120, 100, 120)] * 5 + [(10, 200, 200)] * 2
    fp = cine_fingerprint(spacings, shapes)
    with caplog.at_level("WARNING", logger="autocmr.planners.planner"):
        plans = plan(fp)
    assert plans.transpose_forward == (1, 0, 2)
    assert misplaced_slice_axes(fp, plans.transpose_forward) == [("c5", 1), ("c6", 1)]
    assert "2 of 7 cases have their slice axis at position 1" in caplog.text and "e.g. c5" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="autocmr.planners.planner"):
        plan(acdc_like())  # cine stacks alone: every slice axis first, nothing to say
    assert misplaced_slice_axes(acdc_like(), (0, 1, 2)) == [] and "slice axis" not in caplog.text


def test_topology_pools_down_to_four_voxels_and_doubles_features_with_cap():
    t = make_topology((1.5, 1.5), (256, 224), base_features=32, max_features=512, max_stages=8)
    shapes = np.array([256, 224])
    for s in t.strides:
        shapes = shapes // np.array(s)
    assert (shapes >= 4).all() and ((shapes // 2) < 4).any()
    assert t.features == tuple(min(32 * 2**i, 512) for i in range(t.n_stages))
    assert t.strides[0] == (1, 1)


def test_anisotropic_axis_pooled_only_once_spacing_catches_up():
    t = make_topology((10.0, 1.5, 1.5), (12, 256, 256), base_features=32, max_features=320, max_stages=6)
    z_strides = [s[0] for s in t.strides]
    assert z_strides[:3] == [1, 1, 1]  # 10 mm vs 1.5, 3, 6 mm in-plane: too coarse to pool
    assert t.kernels[0] == (1, 3, 3)


def test_an_axis_too_small_to_pool_does_not_hold_the_others_back():
    """A 6-slice patch whose 5 mm axis cannot halve again: the in-plane axes pool down to ~4-8 voxels anyway
    (the finest spacing is taken over the axes that can still pool; it was over all axes, which left a 6x11x9
    bottleneck: a receptive field far smaller than the heart)."""
    t = make_topology((5.0, 1.562, 1.562), (6, 88, 72), base_features=16, max_features=256, max_stages=5)
    bottleneck = [p // s for p, s in zip((6, 88, 72), t.total_stride())]
    assert bottleneck[1] <= 8 and bottleneck[2] <= 8 and len(t.strides) == 5
    t = make_topology((5.0, 1.58, 1.58), (14, 240, 224), base_features=32, max_features=320, max_stages=6)
    assert [p // s for p, s in zip((14, 240, 224), t.total_stride())] == [7, 7, 7]


def test_rectangular_pixels_do_not_make_a_stack_anisotropic():
    """The 10th-percentile rule needs the slice axis coarser than every other axis by 3x: 6 mm slices of
    1 x 2 mm pixels are not (it fired against the 1 mm side and upsampled half the cases through-plane)."""
    spacings = np.array([(4.0, 1.0, 2.0), (6.0, 1.0, 2.0), (8.0, 1.0, 2.0)])
    target = fullres_spacing(spacings, np.array([[20, 200, 100]] * 3, float))
    assert target == pytest.approx([6.0, 1.0, 2.0])


def test_single_slice_images_beside_stacks_do_not_set_the_slice_spacing():
    """20 cine stacks of 10 mm slices plus 4 single-slice exports that wrote 1 mm: the stacks' spacing, not
    the 10th percentile of all 24 (which upsampled every stack 6.4x along its slices)."""
    spacings = np.array([(10.0, 1.5625, 1.5625)] * 20 + [(1.0, 1.5625, 1.5625)] * 4)
    shapes = np.array([[10, 200, 200]] * 20 + [[1, 200, 200]] * 4, float)
    assert fullres_spacing(spacings, shapes) == pytest.approx([10.0, 1.5625, 1.5625])
    # single-slice data alone keep their own statistics
    assert fullres_spacing(spacings[20:], shapes[20:]) == pytest.approx([1.0, 1.5625, 1.5625])


def test_patch_divisible_by_total_stride_and_batch_rules():
    plans = plan(acdc_like())
    for c in plans.configurations.values():
        total = c.topology.total_stride()
        assert all(p % s == 0 for p, s in zip(c.patch_size, total))
        assert c.batch_size >= 2


def test_cpu_target_is_smaller_and_within_its_compute_budget():
    fp = acdc_like()
    gpu, cpu = plan(fp, target="gpu"), plan(fp, target="cpu")
    g2, c2 = gpu.configuration("2d"), cpu.configuration("2d")
    assert cpu.plans_name == "autocmrPlans_cpu" and gpu.plans_name == "autocmrPlans"
    assert c2.topology.features[0] < g2.topology.features[0]
    assert max(c2.patch_size) <= CPU.max_patch_2d
    assert training_flops(c2.topology, c2.patch_size) * c2.batch_size <= CPU.flop_budget
    # same preprocessing -> shared data folder
    assert c2.data_identifier == g2.data_identifier
    assert GPU.memory_budget_bytes and CPU.flop_budget


def test_plans_json_round_trip_and_version_check(tmp_path):
    plans = plan(acdc_like())
    path = tmp_path / "plans.json"
    plans.save(path)
    assert Plans.load(path) == plans
    data = plans.to_dict()
    data["schema_version"] = 99
    with pytest.raises(PlansError, match="schema version 99.*newer autocmr: upgrade autocmr"):
        Plans.from_dict(data, source="x.json")
    data["schema_version"] = 0
    with pytest.raises(PlansError, match="schema version 0.*re-run `autocmr_plan`"):
        Plans.from_dict(data, source="x.json")
    with pytest.raises(PlansError, match="valid names"):
        plans.configuration("3d_lowres")


def _edited(plans, change):
    import json

    data = json.loads(json.dumps(plans.to_dict()))  # lists, as a plans.json reads
    change(data)
    return data


@pytest.mark.parametrize("change, words", [
    (lambda d: d["configurations"]["2d"]["topology"]["features"].pop(), "features"),
    (lambda d: d["configurations"]["2d"].update(patch_size=[250, 224]), "not divisible"),
    (lambda d: d["configurations"]["2d"]["topology"]["strides"].__setitem__(0, [2, 2]), "must not pool"),
    (lambda d: d["configurations"]["2d"]["topology"].update(dim=3), "dimensions disagree"),
    (lambda d: d["configurations"]["2d"]["topology"]["kernels"].__setitem__(1, [3, 3, 3]), "dimensions disagree"),
    (lambda d: d["configurations"]["2d"].update(name="3d_fullres"), "its name is"),
    (lambda d: d.update(transpose_forward=[0, 0, 1]), "not an order of the axes"),
    (lambda d: d.update(schema_version=True), "schema version True"),
    (lambda d: d.update(labels=["background", "LV"]), "malformed plans"),
    # a 'same' convolution with an even kernel changes the size: the decoder no longer meets its skips
    (lambda d: d["configurations"]["2d"]["topology"]["kernels"].__setitem__(1, [2, 2]), "even kernel"),
    (lambda d: d["configurations"]["2d"]["topology"].update(convs_per_stage=0), "0 convolutions per stage"),
    # the preprocessed folder's name: a path would write, and clean up, outside the preprocessed root
    (lambda d: d["configurations"]["2d"].update(data_identifier="../../x"), "not a plain folder name"),
    (lambda d: d["configurations"]["2d"].update(data_identifier="/tmp/x"), "not a plain folder name"),
    (lambda d: d["configurations"]["2d"].update(data_identifier=".."), "not a plain folder name"),
    # one normalisation scheme, mask setting and intensity statistic per channel
    (lambda d: d["channel_names"].update({"1": "LGE"}), "for 2 channel"),
    (lambda d: d["configurations"]["2d"]["normalization"].append("zscore"), "2 normalisation scheme"),
    (lambda d: d["intensity"].clear(), "0 intensity statistics for 1 channel"),
])
def test_a_plans_file_that_describes_no_buildable_network_is_refused_naming_the_problem(change, words):
    """Hand-edited or damaged plans loaded before and failed deep inside training (a bare torch size error),
    or built another network than they listed (a shorter features list silently dropped a stage)."""
    data = _edited(plan(acdc_like()), change)
    with pytest.raises(PlansError, match=words) as info:
        Plans.from_dict(data, source="plans.json")
    assert str(info.value).startswith("plans.json")


def test_unknown_target_lists_valid_names():
    with pytest.raises(ConfigurationError, match="valid"):
        plan(acdc_like(), target="tpu")


def test_single_slice_data_get_no_3d_configuration():
    fp = cine_fingerprint([(10.0, 1.4, 1.4)] * 4, [(1, 200, 200)] * 4)
    assert set(plan(fp).configurations) == {"2d"}


def test_single_slice_data_keep_their_slice_axis_first_whatever_its_spacing():
    fp = cine_fingerprint([(1.0, 1.4, 1.4)] * 5, [(1, 180, 160)] * 5)  # a 2D export with a 1 mm 'slice spacing'
    plans = plan(fp, target="cpu")
    assert tuple(plans.transpose_forward) == (0, 1, 2) and set(plans.configurations) == {"2d"}
    assert min(plans.configuration("2d").patch_size) > 1
    assert transpose_order(np.array([1.0, 1.4, 1.4]), np.array([1, 180, 160])) == (0, 1, 2)


def test_images_too_small_for_a_u_net_are_refused_at_planning():
    fp = cine_fingerprint([(8.0, 1.5, 1.5)], [(1, 7, 7)])
    with pytest.raises(PlansError, match=r"median size \(1, 7, 7\) voxels are too small for a U-Net"):
        plan(fp, target="cpu")


def test_ct_statistics_enter_the_preprocessed_data_identifier_and_mr_ones_do_not():
    """ct normalisation uses the dataset's statistics, so data preprocessed with old ones are stale after
    re-planning on more cases; a z-scored MR channel's data do not depend on them."""
    from dataclasses import replace

    mr = acdc_like()
    shifted = replace(mr, intensity=(IntensityStats(120.0, 40.0, 90.0, 5.0, 300.0, 0.0, 400.0),))
    assert plan(mr).configuration("2d").data_identifier == plan(shifted).configuration("2d").data_identifier
    ct, ct_shifted = (replace(fp, channel_names={"0": "CT"}) for fp in (mr, shifted))
    assert plan(ct).configuration("2d").data_identifier != plan(ct_shifted).configuration("2d").data_identifier


def test_a_declared_label_drawn_in_no_case_is_warned_about(caplog):
    import logging

    from autocmr.planners.plan_dataset import _warn_absent_labels

    fp = acdc_like()
    with caplog.at_level(logging.WARNING):
        _warn_absent_labels(fp)
    assert "drawn in no training case" not in caplog.text
    no_rv = replace_classes(fp, (0, 1, 2))
    with caplog.at_level(logging.WARNING):
        _warn_absent_labels(no_rv)
    assert "{'RV': 3} are declared in dataset.json but drawn in no training case" in caplog.text


def replace_classes(fp, classes):
    from dataclasses import replace

    return replace(fp, cases=tuple(replace(c, classes=classes) for c in fp.cases))
