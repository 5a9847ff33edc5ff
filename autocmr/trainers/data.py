"""Patch sampling from preprocessed cases (2D slices or 3D patches), with foreground oversampling."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from autocmr.errors import ConfigurationError
from autocmr.preprocessing import storage
from autocmr.preprocessing.context import slices_with_context
from autocmr.preprocessing.other_phase import with_partner

DEFAULT_CACHE_BYTES = 3 * 1024**3  # per process; ACDC (2d) needs ~0.4 GB


class CaseCache:
    """Preprocessed cases of one data folder, loaded lazily and kept in memory (LRU, bounded by bytes)."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]] = OrderedDict()
        self._bytes = 0

    def get(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        if case_id in self._items:
            self._items.move_to_end(case_id)
            return self._items[case_id]
        data, seg = storage.load_arrays(self.folder, case_id)
        if seg is None:
            raise FileNotFoundError(f"{storage.label_path(self.folder, case_id)}: training case has no label")
        item = (data, seg, storage.load_locations(self.folder, case_id))
        self._items[case_id] = item
        self._bytes += data.nbytes + seg.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (d, s, _) = self._items.popitem(last=False)
            self._bytes -= d.nbytes + s.nbytes
        return item


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[..., start:start+size]`` over the trailing axes, zero-padded where it leaves the array."""
    lead = array.ndim - len(size)
    out = np.zeros(array.shape[:lead] + tuple(size), dtype=array.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for n, s, k in zip(array.shape[lead:], start, size):
        a, b = max(s, 0), min(s + k, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def forced_samples(batch_size: int, oversampling: float) -> int:
    """Samples of a batch forced onto foreground: ``round(batch_size * oversampling)``, at least one when on."""
    return max(1, round(batch_size * oversampling)) if oversampling > 0 else 0


def end_slice_samples(batch_size: int, fraction: float, forced: int) -> int:
    """Samples of a batch drawn from end slices: ``round(batch_size * fraction)`` (at least one when on),
    taken from the samples that are not forced onto foreground, so never more than those."""
    wanted = max(1, round(batch_size * fraction)) if fraction > 0 else 0
    return min(wanted, batch_size - forced)


def end_slices(seg: np.ndarray, labels: Sequence[int]) -> tuple[int, ...]:
    """The first and last slice (axis 1 of a (1, z, y, x) label map) holding any of ``labels``; one slice
    when only one does, none when none does."""
    present = np.flatnonzero(np.isin(seg[0], labels).any(axis=(1, 2)))
    return tuple(sorted({int(present[0]), int(present[-1])})) if present.size else ()


class PatchSampler:
    """Draws batches of (image, label) regions of ``sample_size`` around chosen centres.

    The last ``round(batch_size * oversampling)`` samples of each batch (at least one when oversampling is
    on) are centred on a voxel of a random foreground class present in the case; the others anywhere. In
    2D a slice is chosen first (the foreground voxel's slice when oversampling). ``forced`` overrides that
    count: a data-parallel rank draws its share of the global batch's forced samples (see
    :func:`autocmr.trainers.distributed.batch_share`). In 2D, ``context_slices`` (k) neighbours on each side
    of the slice join the image as channels (:mod:`autocmr.preprocessing.context`); the label stays the slice's.

    ``end_slices`` (2D only): the first samples of each batch come from one of the two end slices of the
    case's labelled extent (the first and last slice with foreground), centred on a foreground voxel there.
    Those slices are where the annotation convention decides most (at end-systole the basal slice shows the
    atria, which the annotators leave out) and a uniform draw meets them only about once in five slices.

    ``other_phase``: each sample also carries its case's other cardiac phase (``partners``, from
    :func:`autocmr.preprocessing.other_phase.phase_partners`) at the same place as extra channels, or, with
    probability ``partner_dropout`` and for cases without a partner, the case itself
    (:mod:`autocmr.preprocessing.other_phase`); the label stays the case's.
    """

    def __init__(self, cache: CaseCache, case_ids: Sequence[str], *, dim: int, sample_size: Sequence[int],
                 batch_size: int, oversampling: float, foreground_labels: Sequence[int],
                 forced: int | None = None, context_slices: int = 0, end_slices: int = 0,
                 other_phase: bool = False, partners: Mapping[str, str] | None = None,
                 partner_dropout: float = 0.0, final_patch: Sequence[int] | None = None) -> None:
        if not case_ids:
            raise ValueError("PatchSampler needs at least one case")
        self.cache = cache
        self.case_ids = list(case_ids)
        self.dim = dim
        self.sample_size = tuple(int(s) for s in sample_size)
        self.batch_size = batch_size
        self.n_forced = forced_samples(batch_size, oversampling) if forced is None else forced
        if not 0 <= self.n_forced <= batch_size:
            raise ValueError(f"forced samples must be in [0, {batch_size}], got {self.n_forced}")
        self.foreground_labels = list(foreground_labels)
        if context_slices and dim != 2:
            raise ValueError(f"context_slices needs dim 2, got dim {dim}")
        self.context_slices = context_slices
        if end_slices and dim != 2:
            raise ConfigurationError(f"end-slice oversampling needs the 2d configuration (dim 2), got dim {dim}")
        if not 0 <= end_slices <= batch_size - self.n_forced:
            raise ValueError(f"end-slice samples must be in [0, {batch_size - self.n_forced}] (the samples not "
                             f"forced onto foreground), got {end_slices}")
        self.n_end = end_slices
        self._ends: dict[str, tuple[int, ...]] = {}
        self.other_phase = other_phase
        self.partners = dict(partners or {})
        if not 0.0 <= partner_dropout <= 1.0:
            raise ValueError(f"partner_dropout must be in [0, 1], got {partner_dropout}")
        self.partner_dropout = partner_dropout
        # patch placement "inside": the final patch (after augmentation's centre crop) within the image
        self.final_patch = tuple(int(v) for v in final_patch) if final_patch is not None else None

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        images, segs = [], []
        for i in range(self.batch_size):
            forced = i >= self.batch_size - self.n_forced
            case_id = self.case_ids[rng.integers(len(self.case_ids))]
            data, seg, locations = self.cache.get(case_id)
            centre = self._end_slice_centre(rng, case_id, seg) if i < self.n_end else None
            if centre is None:
                centre = self._centre(rng, seg.shape[1:], locations, forced)
            if self.final_patch is not None:
                centre = self._inside(centre, seg.shape[1:])
            partner = self._partner(rng, case_id, data)
            if self.dim == 2:
                z = centre[0]
                sliced = self._slice(data, z)
                partner = sliced if partner is data else self._slice(partner, z) if partner is not None else None
                data = sliced
                seg, centre = seg[:, z], centre[1:]
            start = [c - s // 2 for c, s in zip(centre, self.sample_size)]
            image = crop_padded(data, start, self.sample_size)
            if partner is not None:
                # the partner's channels after the image's, each with its context slices: the channel-major
                # order of autocmr.preprocessing.context applied to the paired volume (the case itself as its
                # partner is not cut twice)
                image = with_partner(image, image if partner is data else crop_padded(partner, start,
                                                                                      self.sample_size))
            images.append(image)
            segs.append(crop_padded(seg, start, self.sample_size))
        return np.stack(images), np.stack(segs)

    def _slice(self, data: np.ndarray, z: int) -> np.ndarray:
        """Slice ``z`` of a (C, Z, Y, X) volume, with its context slices as channels when configured."""
        return data[:, z] if not self.context_slices else slices_with_context(data, self.context_slices, [z])[0]

    def _partner(self, rng: np.random.Generator, case_id: str, data: np.ndarray) -> np.ndarray | None:
        """The volume whose channels join the sample's (None without ``other_phase``): the case's other phase,
        or the case itself (dropout, or no partner)."""
        if not self.other_phase:
            return None
        # drawn for every sample, so the batches after it do not depend on which cases have a partner
        keep = rng.random() >= self.partner_dropout
        partner_id = self.partners.get(case_id)
        if keep and partner_id is not None:
            return self.cache.get(partner_id)[0]
        return data

    def _end_slice_centre(self, rng: np.random.Generator, case_id: str, seg: np.ndarray) -> list[int] | None:
        """A foreground voxel on one of the case's end slices; None for a case without foreground."""
        if case_id not in self._ends:  # one entry per case: small
            self._ends[case_id] = end_slices(seg, self.foreground_labels)
        ends = self._ends[case_id]
        if not ends:
            return None
        z = ends[rng.integers(len(ends))]
        ys, xs = np.nonzero(np.isin(seg[0, z], self.foreground_labels))
        k = rng.integers(len(ys))
        return [z, int(ys[k]), int(xs[k])]

    def _centre(self, rng: np.random.Generator, shape: Sequence[int], locations: dict[int, np.ndarray],
                forced: bool) -> list[int]:
        if forced:
            present = [c for c in self.foreground_labels if c in locations and len(locations[c])]
            if present:
                coords = locations[present[rng.integers(len(present))]]
                return [int(v) for v in coords[rng.integers(len(coords))]]
        if self.final_patch is not None:  # uniform over the centres that keep the final patch inside
            bounds = self._centre_bounds(shape)
            return [int(rng.integers(lo, hi + 1)) if lo is not None else int(rng.integers(n))
                    for n, (lo, hi) in zip(shape, bounds)]
        return [int(rng.integers(n)) for n in shape]

    def _centre_bounds(self, shape: Sequence[int]) -> list[tuple[int | None, int | None]]:
        """Per axis of ``shape`` (z, y, x), the centres whose final patch lies inside the image (where the
        image is smaller than the patch: the one that centres it); (None, None) for a 2D configuration's slice
        axis, which the patch does not span."""
        assert self.final_patch is not None
        patch = ((None,) if self.dim == 2 else ()) + self.final_patch
        bounds: list[tuple[int | None, int | None]] = []
        for n, p in zip(shape, patch):
            if p is None:
                bounds.append((None, None))
                continue
            lo = p // 2 - max(p - n, 0) // 2
            bounds.append((lo, lo + max(n - p, 0)))
        return bounds

    def _inside(self, centre: Sequence[int], shape: Sequence[int]) -> list[int]:
        """``centre`` moved the least so that the final patch lies inside the image (forced and end-slice
        samples keep their structure in the patch: it moves by at most half a patch)."""
        return [int(c) if lo is None else int(np.clip(c, lo, hi))
                for c, (lo, hi) in zip(centre, self._centre_bounds(shape))]
