"""End-slice oversampling: samples drawn from the first and last labelled slice of a case (base and apex)."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.errors import ConfigurationError
from autocmr.trainers.data import PatchSampler, end_slice_samples, end_slices, forced_samples
from autocmr.trainers.distributed import DistributedContext, batch_share
from autocmr.trainers.options import TrainOptions

SLICES, FIRST, LAST = 9, 2, 6  # foreground on slices 2..6 of 9


class _StackCache:
    """One case whose slice z has the constant value z + 10 (a sample tells which slice it came from);
    foreground on slices FIRST..LAST, label 2 on the last one only."""

    def __init__(self):
        data = np.broadcast_to((np.arange(SLICES, dtype=np.float32) + 10)[None, :, None, None],
                               (1, SLICES, 48, 48)).copy()
        seg = np.zeros((1, SLICES, 48, 48), np.int8)
        seg[0, FIRST:LAST, 10:20, 10:20] = 1
        seg[0, LAST, 30:34, 30:34] = 2
        self.seg = seg
        self.item = (data, seg, {c: np.argwhere(seg[0] == c) for c in (1, 2)})

    def get(self, case_id):
        return self.item


def _sampler(cache, *, batch_size=6, end=0, oversampling=0.0, dim=2):
    return PatchSampler(cache, ["a"], dim=dim, sample_size=(16, 16), batch_size=batch_size, oversampling=oversampling,
                        foreground_labels=[1, 2], end_slices=end)


def _slice_of(sample: np.ndarray) -> int:
    return int(sample[0][sample[0] != 0].max()) - 10  # padding is 0, slice z is z + 10


def test_end_slices_are_the_first_and_last_slice_with_foreground():
    seg = _StackCache().seg
    assert end_slices(seg, [1, 2]) == (FIRST, LAST)
    assert end_slices(seg, [2]) == (LAST,)  # one labelled slice: it is both ends
    assert end_slices(np.zeros_like(seg), [1, 2]) == ()


def test_end_slice_samples_come_from_the_end_slices_and_are_centred_on_foreground():
    cache = _StackCache()
    images, segs = _sampler(cache, batch_size=40, end=40).sample(np.random.default_rng(0))
    drawn = [_slice_of(s) for s in images]
    assert set(drawn) == {FIRST, LAST}  # both ends, nothing else
    assert all(seg[0, 8, 8] > 0 for seg in segs)  # the centre of every patch is a foreground voxel


def test_only_the_first_samples_of_a_batch_are_end_slice_samples():
    cache = _StackCache()
    rng = np.random.default_rng(1)
    others = []
    for _ in range(30):
        images, _ = _sampler(cache, batch_size=6, end=2).sample(rng)
        assert {_slice_of(s) for s in images[:2]} <= {FIRST, LAST}
        others += [_slice_of(s) for s in images[2:] if (s != 0).any()]
    assert set(others) - {FIRST, LAST}  # the rest are drawn from every slice as before


def test_a_case_without_foreground_falls_back_to_a_uniform_draw():
    cache = _StackCache()
    data, seg, _ = cache.item
    cache.item = (data, np.zeros_like(seg), {})
    images, _ = _sampler(cache, batch_size=12, end=12).sample(np.random.default_rng(2))
    assert len({_slice_of(s) for s in images if (s != 0).any()}) > 2


def test_end_slice_samples_share_the_batch_with_forced_foreground():
    assert end_slice_samples(7, 0.0, 2) == 0
    assert end_slice_samples(7, 0.3, 2) == 2
    assert end_slice_samples(7, 0.01, 2) == 1  # on means at least one
    assert end_slice_samples(7, 1.0, 2) == 5  # never the forced samples
    with pytest.raises(ValueError, match="not forced"):
        _sampler(_StackCache(), batch_size=4, end=4, oversampling=0.5)
    with pytest.raises(ConfigurationError, match="2d"):
        _sampler(_StackCache(), end=1, dim=3)
    with pytest.raises(ConfigurationError, match="share of the batch"):
        TrainOptions(end_slice_oversampling=1.5)


@pytest.mark.parametrize("batch, world", [(7, 2), (7, 3), (8, 4), (3, 3)])
def test_ranks_split_the_end_slice_samples_of_the_global_batch(batch, world):
    forced = forced_samples(batch, 0.33)
    end = end_slice_samples(batch, 0.3, forced)
    shares = [batch_share(batch, forced, DistributedContext(rank, world), end) for rank in range(world)]
    assert sum(s.end_slices for s in shares) == end
    assert all(s.end_slices + s.forced <= s.batch_size for s in shares)
    assert shares[0].end_slices == min(end, shares[0].batch_size)  # the first samples sit with the first ranks


def test_default_options_keep_end_slice_oversampling_off():
    assert TrainOptions().end_slice_oversampling == 0.0
    assert batch_share(7, 2, DistributedContext()).end_slices == 0
