"""Overlap and surface-distance metrics between a reference and a predicted label map, in physical units.

Conventions (shared by every function here and by the independent check in the tests):

* Arrays are in numpy order ``(z, y, x)`` (any number of axes works); ``spacing`` is given in the same order,
  in mm. Distances are in mm, volumes in mL.
* **Surface** of a binary mask = its boundary voxels: foreground voxels with at least one face-connected
  (6-neighbourhood in 3D) neighbour that is background. Space outside the array counts as background, so a
  structure cut by the field of view (e.g. the LV in the basal slice) is closed by a surface there. A single
  slice (an axis of size 1) is measured in 2D, by its contours (otherwise every pixel would be surface).
  This equals ``BinaryContourImageFilter(fullyConnected=False)`` of ITK applied to the mask padded by one
  background voxel.
* Distances are between voxel centres: for each surface voxel of one mask, the Euclidean distance (mm) to the
  nearest surface voxel of the other mask. ``hd`` = the larger of the two directed maxima (Hausdorff),
  ``hd95`` = the larger of the two directed 95th percentiles (as in Taha & Hanbury 2015 and MONAI; numpy's
  linear interpolation), ``assd`` = mean of all distances of both directions pooled (average symmetric surface
  distance, the "mean contour distance" of cardiac challenges).
* Empty masks, per class: both empty -> Dice 1, IoU 1, distances 0 (a correct "absent" answer);
  exactly one empty -> Dice 0, IoU 0, distances undefined (NaN). Summaries exclude undefined distances from
  means and count them (``n_undefined``); see :mod:`autocmr.evaluation.agreement`.
"""
from __future__ import annotations

import math

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

DICE = "dice"
IOU = "iou"
HD = "hd"
HD95 = "hd95"
ASSD = "assd"
VOL_REF = "vol_ref_ml"
VOL_PRED = "vol_pred_ml"
OVERLAP_METRICS = (DICE, IOU)
DISTANCE_METRICS = (HD, HD95, ASSD)
METRICS = OVERLAP_METRICS + DISTANCE_METRICS + (VOL_REF, VOL_PRED)

# Percentile of the directed surface distances used for the robust Hausdorff distance (HD95).
HD_PERCENTILE = 95.0
# 1 mL = 1000 mm^3.
MM3_PER_ML = 1000.0
# Voxels kept around the union bounding box before computing distance maps: one is enough for the surface
# (a face neighbour) and all surface voxels lie inside the box, so the distances are exact.
CROP_MARGIN = 1

# Values for a class absent from both masks (documented above).
BOTH_EMPTY = {DICE: 1.0, IOU: 1.0, HD: 0.0, HD95: 0.0, ASSD: 0.0}
# Values for a class present in exactly one mask: overlap is zero, distances are undefined.
ONE_EMPTY = {DICE: 0.0, IOU: 0.0, HD: float("nan"), HD95: float("nan"), ASSD: float("nan")}


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL for a 3D spacing in mm; NaN for a 2D image (a pixel has an area, and the file
    no slice thickness: its product of two spacings in mm^2 is no volume in mL)."""
    if len(spacing) != 3:
        return math.nan
    return float(np.prod(np.asarray(spacing, dtype=float))) / MM3_PER_ML


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a binary mask (face connectivity; outside the array is background)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _union_box(a: np.ndarray, b: np.ndarray, margin: int = CROP_MARGIN) -> tuple[slice, ...]:
    union = a | b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        present = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, union.shape[axis])))
    return tuple(box)


def directed_surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``, and from ``b`` to ``a``.

    Both masks must be non-empty. The arrays are cropped to the union bounding box (plus
    :data:`CROP_MARGIN`) first, which keeps large volumes fast without changing any distance.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    kept = [axis for axis, n in enumerate(a.shape) if n > 1]
    if kept and len(kept) < a.ndim:  # a single slice: its contours, not every pixel (all would face 'outside')
        shape = tuple(a.shape[axis] for axis in kept)
        a, b, spacing = a.reshape(shape), b.reshape(shape), [spacing[axis] for axis in kept]
    box = _union_box(a, b)
    # Crop first, then take surfaces: the margin keeps a background ring where the box is inside the
    # array, and where it touches the array border the outside-is-background rule applies to both alike.
    sa, sb = surface(a[box]), surface(b[box])
    sampling = [float(s) for s in spacing]
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    return dist_to_b[sa], dist_to_a[sb]


def _binary_metrics(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    vv = voxel_volume_ml(spacing)
    values = {VOL_REF: n_ref * vv, VOL_PRED: n_pred * vv}
    if n_ref == 0 and n_pred == 0:
        return {**BOTH_EMPTY, **values}
    if n_ref == 0 or n_pred == 0:
        return {**ONE_EMPTY, **values}
    inter = int(np.logical_and(ref, pred).sum())
    d_rp, d_pr = directed_surface_distances(ref, pred, spacing)
    values.update({
        DICE: 2.0 * inter / (n_ref + n_pred),
        IOU: inter / (n_ref + n_pred - inter),
        HD: float(max(d_rp.max(), d_pr.max())),
        HD95: float(max(np.percentile(d_rp, HD_PERCENTILE), np.percentile(d_pr, HD_PERCENTILE))),
        ASSD: float((d_rp.sum() + d_pr.sum()) / (d_rp.size + d_pr.size)),
    })
    return values


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                 labels: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Metrics of one case for every foreground class.

    Args:
        reference: integer label map, numpy order (z, y, x).
        prediction: label map of the same shape.
        spacing: voxel size in mm, same axis order as the arrays.
        labels: class name -> label value; entries with value 0 (background) are skipped.

    Returns:
        class name -> {"dice", "iou", "hd", "hd95", "assd", "vol_ref_ml", "vol_pred_ml"}; distances in mm
        (NaN when exactly one mask is empty), volumes in mL.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {reference.ndim}D array")
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} must be positive and finite (mm)")
    return {name: _binary_metrics(reference == value, prediction == value, spacing)
            for name, value in labels.items() if int(value) != 0}


__all__ = ["ASSD", "DICE", "DISTANCE_METRICS", "HD", "HD95", "IOU", "METRICS", "OVERLAP_METRICS", "VOL_PRED",
           "VOL_REF", "case_metrics", "directed_surface_distances", "surface", "voxel_volume_ml"]
