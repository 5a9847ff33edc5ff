"""The other cardiac phase as input channels: pairing of preprocessed cases, channel order."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from autocmr.documents.plans import Configuration
from autocmr.preprocessing.context import slices_with_context
from autocmr.preprocessing.other_phase import aligned, pair_aligned, phase_partners, with_partner

GRID = {"shape_before_crop": [8, 64, 60], "bbox": [[0, 8], [0, 64], [0, 60]], "shape_after_resampling": [8, 64, 60],
        "spacing": [10.0, 1.5, 1.5]}


def test_with_partner_appends_the_partner_channels_or_the_image_itself():
    data, partner = np.random.rand(2, 3, 4, 5), np.random.rand(2, 3, 4, 5)
    paired = with_partner(data, partner)
    assert paired.shape == (4, 3, 4, 5)
    np.testing.assert_array_equal(paired[:2], data)
    np.testing.assert_array_equal(paired[2:], partner)
    np.testing.assert_array_equal(with_partner(data), np.concatenate([data, data]))
    t = with_partner(torch.from_numpy(data), torch.from_numpy(partner))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(paired))


def test_with_partner_refuses_a_partner_of_another_shape():
    with pytest.raises(ValueError, match="voxel-aligned"):
        with_partner(np.zeros((1, 3, 4, 5)), np.zeros((1, 3, 4, 6)))


def test_context_of_the_paired_volume_is_each_volume_s_context_side_by_side():
    """The sampler slices image and partner separately; that must equal the context of the paired volume."""
    data, partner = np.random.rand(1, 5, 6, 7), np.random.rand(1, 5, 6, 7)
    for z in (0, 2, 4):
        joint = slices_with_context(with_partner(data, partner), 1, [z])[0]
        apart = np.concatenate([slices_with_context(data, 1, [z])[0], slices_with_context(partner, 1, [z])[0]])
        np.testing.assert_array_equal(joint, apart)


def test_aligned_needs_the_same_grid_crop_and_spacing():
    assert aligned(GRID, dict(GRID))
    assert not aligned(GRID, {**GRID, "bbox": [[0, 8], [2, 64], [0, 60]]})
    assert not aligned(GRID, {**GRID, "spacing": [10.0, 1.25, 1.25]})
    assert not aligned({}, {})  # nothing known: not aligned
    assert aligned(GRID, {**GRID, "spacing": [10.0, 1.5 + 1e-9, 1.5]})  # spacings to rounding


def test_aligned_compares_the_headers_position_where_both_have_one():
    """Two files with the same matrix and spacing but another slice range are not one acquisition's phases."""
    header = {"spacing": [1.5, 1.5, 10.0], "origin": [-50.0, -60.0, 20.0], "direction": list(np.eye(3).ravel())}
    rounded = {**header, "origin": [-50.0, -60.00001, 20.0001]}
    shifted = {**header, "origin": [-50.0, -60.0, 30.0]}  # one slice further along the stack
    tilted = {**header, "direction": [1.0, 0.0, 0.0, 0.0, 0.98, -0.2, 0.0, 0.2, 0.98]}
    assert aligned({**GRID, "geometry": header}, {**GRID, "geometry": rounded})
    assert not aligned({**GRID, "geometry": header}, {**GRID, "geometry": shifted})
    assert not aligned({**GRID, "geometry": header}, {**GRID, "geometry": tilted})
    assert aligned({**GRID, "geometry": header}, GRID)  # one side without a header: the grid decides
    _, problem = pair_aligned(np.zeros((1, 2, 3, 3)), {**GRID, "geometry": header}, np.ones((1, 2, 3, 3)),
                              {**GRID, "geometry": shifted})
    assert problem is not None and "origin" in problem


def test_phase_partners_pairs_one_ed_with_one_es_per_subject(caplog):
    phases = {"a_ED": ("a", "ED"), "a_ES": ("a", "ES"),
              "b_ED": ("b", "ED"),  # lone
              "c_ED": ("c", "ED"), "c_ES": ("c", "ES"), "c_ES2": ("c", "ES"),  # ambiguous
              "d_ED": ("d", "ED"), "d_ES": ("d", "ES"),  # misaligned
              "e_x": ("e", "nan")}
    props = {c: GRID for c in phases}
    props["d_ES"] = {**GRID, "shape_before_crop": [9, 64, 60]}
    with caplog.at_level(logging.WARNING):
        partners = phase_partners(phases, props.__getitem__)
    assert partners == {"a_ED": "a_ES", "a_ES": "a_ED"}
    assert "1 subject(s)" in caplog.text and "d" in caplog.text


def test_other_phase_doubles_the_network_input_channels():
    from autocmr.documents.plans import Resampling, Topology

    topo = Topology(2, (8, 16), ((3, 3), (3, 3)), ((1, 1), (2, 2)))
    base = dict(name="2d", dim=2, data_identifier="x", spacing=(10.0, 1.5, 1.5),
                resampling=Resampling(False, True), median_shape=(8, 64, 64), patch_size=(64, 64), batch_size=2,
                topology=topo, normalization=("zscore",), use_mask_for_norm=(False,), batch_dice=True)
    assert Configuration(**base).input_channels(1) == 1
    assert Configuration(**base, other_phase=True).input_channels(1) == 2
    assert Configuration(**base, other_phase=True, context_slices=1).input_channels(2) == 12
    assert Configuration(**base, other_phase=True).image_channels(2) == 4
