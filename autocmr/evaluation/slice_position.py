"""Per-slice volumes of one case, for the error breakdown by slice position (``--by slice_position``).

Slices are taken along the through-plane axis of the stack: the first axis of the canonical order
(:mod:`autocmr.io.orientation`) for thick slices, else the axis of the largest spacing. The **reference LV
extent** is the run of slices, from the first to the last, where the reference has LV cavity or LV
myocardium. Each slice is later labelled (by
:mod:`autocmr.evaluation.position_report`, once base and apex are known) as ``above_base``, ``basal``, ``mid``,
``apical`` or ``below_apex``: thirds of the extent by slice centre, plus the slices beyond either end.

Which end is the base is not assumed from the slice order. This module measures two hints per case:

* **anatomy** (used first): the ventricles are widest at the base and taper to the apex, so the
  cross-section area of all reference foreground inside the LV extent has its centroid on the basal side.
  ``anatomy_score = 0.5 - centroid`` (centroid in [0, 1] of the extent, in slice-index order): positive
  means the first slice is basal. On the 160 ACDC reference volumes the score is positive for every volume
  (0.014 to 0.22; summed over each patient's ED and ES, 0.08 to 0.44), i.e. ACDC stores the base first.
* **geometry** (used only when the anatomy is ambiguous): the world direction of increasing slice index
  against the base-to-apex direction of a normally placed heart (left, anterior, inferior). Only trusted for
  a double-oblique slice normal, as a planned short-axis stack has: ACDC's NIfTI headers carry an identity
  direction, for which this hint would point the wrong way, so axis-aligned headers give no hint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from autocmr.evaluation.metrics import voxel_volume_ml
from autocmr.io.image import Geometry
from autocmr.io.orientation import canonical_reorientation, through_plane_axis

# Classes that define the LV extent (autocmr names: LV cavity, LV myocardium).
LV_EXTENT_CLASSES = ("LV", "MYO")
# Thirds need at least this many slices in the reference LV extent; fewer gives a note, not a breakdown.
MIN_EXTENT_SLICES = 3
# Base-to-apex direction of a heart in normal position, patient LPS coordinates: towards the patient's left
# (+x), anterior (-y) and inferior (-z); the long axis points roughly this way (about 45 degrees from each).
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
# A slice normal whose largest LPS component exceeds this is axis-aligned (e.g. a default identity header),
# which a planned short-axis stack never is: no geometry hint from it.
AXIS_ALIGNED_COSINE = 0.95
# |cos| between the slice normal and APEX_DIRECTION_LPS needed for a geometry hint.
MIN_GEOMETRY_COSINE = 0.5
FIRST, LAST = "first", "last"


@dataclass(frozen=True)
class SliceProfile:
    """Per-slice volumes of one 3D case (or one frame of a cine) and the hints for base and apex.

    Attributes:
        case_id: the case (``CASE@tNN`` for a cine frame); ``source_case`` the file it comes from.
        n_slices: slices along the through-plane axis.
        extent: (first, last) slice index of the reference LV extent, or None.
        anatomy_score: see the module docstring (None when the extent is too short).
        geometry_hint: ``first``/``last`` (the basal end from the header) or None.
        note: why the case has no positional breakdown (empty when it has one).
        rows: one per slice x class: ``slice``, ``class``, ``vol_ref_ml``, ``vol_pred_ml``, ``vol_inter_ml``.
    """

    case_id: str
    source_case: str
    frame: int | None
    n_slices: int
    extent: tuple[int, int] | None
    anatomy_score: float | None
    geometry_hint: str | None
    note: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The per-case fields, without the slice rows."""
        first, last = self.extent if self.extent else (None, None)
        return {"case_id": self.case_id, "source_case": self.source_case, "frame": self.frame,
                "n_slices": self.n_slices, "extent_first": first, "extent_last": last,
                "anatomy_score": self.anatomy_score, "geometry_hint": self.geometry_hint, "note": self.note}


def slice_axis_order(shape: Sequence[int], spacing: Sequence[float],
                     geometry: Geometry | None) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Axis permutation and flips that put the slice axis first: the canonical ones when the header is known,
    else :func:`autocmr.io.orientation.through_plane_axis` first (in-memory arrays, e.g. a trainer's
    validation). Canonical order puts the slice axis first only for thick slices (twice the pixel size or
    more); a stack of thinner slices is in patient-axis order there, so its slice axis (the largest spacing)
    is moved first, keeping its canonical flip."""
    if geometry is None:
        thick = through_plane_axis(shape, spacing)
        return (thick,) + tuple(a for a in range(len(spacing)) if a != thick), (False,) * len(spacing)
    reo = canonical_reorientation(geometry.spatial())
    thick = through_plane_axis([shape[a] for a in reo.axes], [spacing[a] for a in reo.axes])
    order = (thick,) + tuple(k for k in range(len(reo.axes)) if k != thick)
    return tuple(reo.axes[k] for k in order), tuple(reo.flips[k] for k in order)


def geometry_hint(geometry: Geometry | None) -> str | None:
    """``first``/``last``: the end of the canonical slice axis that the header puts at the base, or None."""
    if geometry is None:
        return None
    geometry = geometry.spatial()
    axes, flips = slice_axis_order(geometry.size[::-1], geometry.spacing[::-1], geometry)
    cosines = geometry.direction_matrix()
    normal = cosines[:, 2 - axes[0]] * (-1.0 if flips[0] else 1.0)  # world direction of slice index +1
    if np.abs(normal).max() > AXIS_ALIGNED_COSINE:
        return None
    towards_apex = float(normal @ APEX_DIRECTION_LPS)
    if abs(towards_apex) < MIN_GEOMETRY_COSINE:
        return None
    return FIRST if towards_apex > 0 else LAST


def _extent(present: np.ndarray) -> tuple[int, int] | None:
    slices = np.flatnonzero(present)
    return (int(slices[0]), int(slices[-1])) if slices.size else None


def anatomy_score(foreground_area: np.ndarray, extent: tuple[int, int]) -> float | None:
    """0.5 minus the area centroid over the extent (in [0, 1], slice-index order); None if undefined."""
    first, last = extent
    area = np.asarray(foreground_area[first:last + 1], dtype=float)
    if area.sum() <= 0 or last - first + 1 < MIN_EXTENT_SLICES:
        return None
    centres = (np.arange(area.size) + 0.5) / area.size
    return float(0.5 - (centres * area).sum() / area.sum())


def slice_profile(case_id: str, reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                  labels: Mapping[str, int], *, geometry: Geometry | None = None, source_case: str | None = None,
                  frame: int | None = None) -> SliceProfile:
    """Per-slice reference, predicted and overlapping volume of each class of one 3D case.

    Args:
        reference, prediction: label maps (z, y, x) in stored numpy order; ``spacing`` in the same order (mm).
        labels: class name -> value; the LV extent needs ``LV`` and/or ``MYO``.
        geometry: the stored header (gives the slice axis and the geometry hint); None for in-memory arrays.
    """
    axes, flips = slice_axis_order(np.shape(reference), spacing, geometry)
    flip_axes = tuple(i for i, f in enumerate(flips) if f)
    ref = np.flip(np.transpose(np.asarray(reference), axes), flip_axes)
    pred = np.flip(np.transpose(np.asarray(prediction), axes), flip_axes)
    slice_ml = voxel_volume_ml(spacing)
    n = int(ref.shape[0])
    base = dict(case_id=case_id, source_case=source_case or case_id, frame=frame, n_slices=n)
    extent_values = [labels[c] for c in LV_EXTENT_CLASSES if c in labels]
    if not extent_values:
        return SliceProfile(**base, extent=None, anatomy_score=None, geometry_hint=None,
                            note=f"no LV or MYO class among {sorted(labels)}: slice positions need the LV extent")
    flat_ref, flat_pred = ref.reshape(n, -1), pred.reshape(n, -1)
    extent = _extent(np.isin(flat_ref, extent_values).any(axis=1))
    fg_values = list(labels.values())
    score = anatomy_score(np.isin(flat_ref, fg_values).sum(axis=1), extent) if extent else None
    note = ""
    if extent is None:
        note = "reference has no LV cavity or myocardium: no LV extent to locate slices in"
    elif extent[1] - extent[0] + 1 < MIN_EXTENT_SLICES:
        note = (f"reference LV spans {extent[1] - extent[0] + 1} slice(s); basal/mid/apical thirds need at "
                f"least {MIN_EXTENT_SLICES}")
    rows = []
    for name, value in labels.items():
        in_ref, in_pred = flat_ref == value, flat_pred == value
        ref_n, pred_n, inter_n = in_ref.sum(axis=1), in_pred.sum(axis=1), (in_ref & in_pred).sum(axis=1)
        rows += [{"case_id": case_id, "slice": z, "class": name, "vol_ref_ml": float(ref_n[z]) * slice_ml,
                  "vol_pred_ml": float(pred_n[z]) * slice_ml, "vol_inter_ml": float(inter_n[z]) * slice_ml}
                 for z in range(n)]
    return SliceProfile(**base, extent=extent, anatomy_score=score, geometry_hint=geometry_hint(geometry),
                        note=note, rows=rows if not note else [])


def no_slices_profile(case_id: str, dim: int) -> SliceProfile:
    """The breakdown's entry for an image without slices (2D): a note, no rows."""
    return SliceProfile(case_id, case_id, None, 1, None, None, None,
                        note=f"a {dim}D image has no slice positions: left out of the slice-position breakdown")


__all__ = ["FIRST", "LAST", "LV_EXTENT_CLASSES", "MIN_EXTENT_SLICES", "SliceProfile", "anatomy_score",
           "geometry_hint", "no_slices_profile", "slice_profile"]
