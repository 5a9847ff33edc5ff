"""Canonical axis order for arrays, so that the same scan stored in any orientation gives the same array.

Only axis permutations and flips are used (never interpolation), so the mapping is exact and invertible.
Rule, applied to the direction cosines and spacings of a 3D image:

* for an anisotropic image (largest spacing >= ``ANISOTROPY_RATIO`` x the second largest, e.g. a cine
  short-axis stack with 8-10 mm slices and 1.5 mm pixels), the through-plane axis goes first
  (numpy axis 0) so that 2D models always see in-plane slices; so does the axis of a single slice;
* the remaining axes are ordered by the patient axis (LPS x, y, z) each is closest to;
* every axis is flipped so that its direction cosine's dominant component is positive.

Because the rule only looks at physical directions, two files that store the same voxels in different
axis orders or flips map to the identical canonical array.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Sequence

import numpy as np

from autocmr.io.image import Geometry

# A slice thickness at least twice the next-largest spacing marks a stack of 2D slices (cine SAX: 5-10 mm
# slices, 1.2-2 mm pixels). Isotropic 3D acquisitions stay in plain patient-axis order.
ANISOTROPY_RATIO = 2.0


@dataclass(frozen=True)
class Reorientation:
    """Maps a stored numpy array (z, y, x) to canonical order: ``np.flip(arr.transpose(axes), flipped)``."""

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Stored -> canonical. Extra leading axes (channels) are preserved."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in self.axes))
        flip_axes = tuple(lead + i for i, f in enumerate(self.flips) if f)
        return np.flip(out, flip_axes) if flip_axes else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical -> stored. Extra leading axes (channels) are preserved."""
        lead = array.ndim - 3
        flip_axes = tuple(lead + i for i, f in enumerate(self.flips) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = tuple(int(i) for i in np.argsort(self.axes))
        return np.transpose(out, tuple(range(lead)) + tuple(lead + a for a in inverse))

    def spacing(self, spacing_zyx: tuple[float, ...]) -> tuple[float, float, float]:
        """Canonical-order spacing from stored numpy-order spacing."""
        return tuple(float(spacing_zyx[a]) for a in self.axes)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {"axes": list(self.axes), "flips": list(self.flips)}

    @classmethod
    def from_dict(cls, d: dict) -> "Reorientation":
        return cls(tuple(int(a) for a in d["axes"]), tuple(bool(f) for f in d["flips"]))  # type: ignore[arg-type]


def through_plane_axis(shape: Sequence[int], spacing: Sequence[float]) -> int:
    """The slice axis of an array of ``shape`` with voxel ``spacing`` (same order) when no header orientation
    is at hand: the one axis of size 1 if exactly one has it (a single slice, whatever slice spacing its
    export wrote: 2D exports often write 1 mm), else the axis with the largest spacing (the first on a tie)."""
    single = [k for k, n in enumerate(shape) if n == 1]
    if len(single) == 1:
        return single[0]
    return int(np.argmax(np.asarray(spacing, dtype=float)))


SLICE_LIKE_RATIO = 1.5  # below ANISOTROPY_RATIO, a spacing this much coarser than the finest still reads as slices


def slices_cut_across(geometry: Geometry, reorientation: Reorientation | None = None) -> str | None:
    """Why a 2D model would see this image cut across its slices, or None: slices thinner than
    ``ANISOTROPY_RATIO`` x the pixels but clearly coarser (:data:`SLICE_LIKE_RATIO`) are ordered by patient axis,
    and in an oblique stack that can put an in-plane axis first, the axis a 2D model slices along.
    ``reorientation``: the image's canonical one, where the caller has it already."""
    geometry = geometry.spatial()
    spacing = geometry.spacing_zyx
    axes = (reorientation or canonical_reorientation(geometry)).axes
    thick = through_plane_axis(geometry.shape, spacing)
    if axes[0] == thick or spacing[thick] < SLICE_LIKE_RATIO * min(spacing):
        return None
    return (f"its {spacing[thick]:g} mm slices are thinner than {ANISOTROPY_RATIO:g}x its {min(spacing):g} mm "
            "pixels, so canonical order follows the patient axes, and in this oblique stack that puts an in-plane "
            "axis first: a 2D model segments cuts across the slices, not the slices (check the mask, or resample "
            "the stack to thicker slices)")


def canonical_reorientation(geometry: Geometry) -> Reorientation:
    """Permutation and flips that bring an image of ``geometry`` into canonical order (see module doc)."""
    geometry = geometry.spatial()
    # Columns of the ITK direction matrix are the world directions of ITK axes (x, y, z); numpy axis k
    # is ITK axis 2 - k.
    cosines_itk = geometry.direction_matrix()
    cosines = [cosines_itk[:, 2 - k] for k in range(3)]  # per numpy axis, a world vector (LPS)
    spacing = geometry.spacing_zyx

    thick = through_plane_axis(geometry.shape, spacing)
    largest_other = max(spacing[a] for a in range(3) if a != thick)
    # one slice is a 2D image whatever its slice spacing says: its slice axis goes first all the same
    anisotropic = geometry.shape.count(1) == 1 or spacing[thick] >= ANISOTROPY_RATIO * largest_other

    def world_axis_cost(axis_perm: tuple[int, ...], world_perm: tuple[int, ...]) -> float:
        return -sum(abs(cosines[a][w]) for a, w in zip(axis_perm, world_perm))

    candidates = []
    for axis_perm in permutations(range(3)):
        if anisotropic and axis_perm[0] != thick:
            continue
        rest = axis_perm[1:] if anisotropic else axis_perm
        # The remaining axes go to numpy slots in the order of the world axis they align with; in numpy
        # order the world z (S) axis comes first, matching how SimpleITK arrays are laid out.
        best_world = min(permutations(range(3), len(rest)), key=lambda w: world_axis_cost(rest, w))
        if list(best_world) != sorted(best_world, reverse=True):
            continue
        candidates.append((world_axis_cost(rest, best_world), axis_perm, best_world))
    if not candidates:  # cannot happen for a proper rotation matrix, but never fail on odd headers
        axes = tuple(int(a) for a in (([thick] + [a for a in range(3) if a != thick]) if anisotropic
                                      else range(3)))
    else:
        axes = min(candidates, key=lambda c: c[0])[1]

    flips = []
    for a in axes:
        v = cosines[a]
        flips.append(bool(v[int(np.argmax(np.abs(v)))] < 0))
    return Reorientation(tuple(int(a) for a in axes), tuple(flips))  # type: ignore[arg-type]


def store_permuted(array: np.ndarray, geometry: Geometry, axes: tuple[int, ...],
                   flips: tuple[bool, ...]) -> tuple[np.ndarray, Geometry]:
    """Store the same physical image with its numpy axes permuted (``axes``) and then flipped.

    Every voxel keeps its physical position: the returned geometry's origin, spacing and direction are
    adjusted. Used to build reoriented copies (tests, phantoms) and to check orientation robustness.
    """
    geometry = geometry.spatial()
    if array.shape != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape}")
    cols = geometry.direction_matrix()
    col = [cols[:, 2 - k] for k in range(3)]  # world direction of each numpy axis
    spacing = geometry.spacing_zyx
    origin = np.asarray(geometry.origin, float)
    new_cols, new_spacing = [], []
    for m, a in enumerate(axes):
        sign = -1.0 if flips[m] else 1.0
        new_cols.append(sign * col[a])
        new_spacing.append(spacing[a])
        if flips[m]:
            origin = origin + col[a] * spacing[a] * (array.shape[a] - 1)
    out = Reorientation(tuple(axes), tuple(flips)).apply(array)  # type: ignore[arg-type]
    direction = np.stack([new_cols[2 - a] for a in range(3)], axis=1)  # ITK column a = numpy axis 2 - a
    new_geometry = Geometry(
        size=tuple(int(n) for n in reversed(out.shape)),
        spacing=tuple(float(s) for s in reversed(new_spacing)),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return np.ascontiguousarray(out), new_geometry


def to_canonical(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float, float], Reorientation]:
    """Canonical-order array (see module doc), its spacing (numpy order) and the reorientation used."""
    reo = canonical_reorientation(geometry)
    return np.ascontiguousarray(reo.apply(array)), reo.spacing(geometry.spatial().spacing_zyx), reo
