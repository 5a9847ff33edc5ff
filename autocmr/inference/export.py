"""From probabilities in preprocessed space back to a label map in the input's native space."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from autocmr.documents.case_properties import CaseProperties
from autocmr.errors import DocumentError
from autocmr.io.orientation import Reorientation
from autocmr.planners.plans import Configuration, Plans
from autocmr.preprocessing.cropping import uncrop
from autocmr.preprocessing.resampling import argmax_resampled, resample_probabilities, through_plane_nearest


def labels_to_native(probabilities: torch.Tensor, props: dict[str, Any] | CaseProperties, plans: Plans,
                     config: Configuration) -> np.ndarray:
    """Label map (uint8) in the stored order of the input, from probabilities (C, z, y, x)."""
    props = CaseProperties.from_dict(props)
    bbox = [tuple(b) for b in props.bbox]
    anisotropic = through_plane_nearest(config.resampling.anisotropic, props.spacing)
    label = argmax_resampled(probabilities, props.shape_after_crop, anisotropic=anisotropic)
    label = uncrop(label, bbox, props.shape_before_crop, fill=0)
    return _to_stored_order(label, props, plans)


def probabilities_to_native(probabilities: torch.Tensor, props: dict[str, Any] | CaseProperties, plans: Plans,
                            config: Configuration) -> np.ndarray:
    """Class probabilities (C, z, y, x) in the stored order of the input (background 1 outside the crop)."""
    props = CaseProperties.from_dict(props)
    bbox = [tuple(b) for b in props.bbox]
    probs = resample_probabilities(probabilities, props.shape_after_crop,
                                   anisotropic=through_plane_nearest(config.resampling.anisotropic, props.spacing)
                                   ).numpy()
    full = uncrop(probs, bbox, props.shape_before_crop, fill=0)
    outside = np.ones(props.shape_before_crop, bool)
    outside[tuple(slice(a, b) for a, b in bbox)] = False
    full[0][outside] = 1.0
    return _to_stored_order(full, props, plans)


def _to_stored_order(array: np.ndarray, props: CaseProperties, plans: Plans) -> np.ndarray:
    lead = array.ndim - 3
    back = plans.transpose_backward
    array = np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in back))
    if props.reorientation is None:
        raise DocumentError(f"case properties of {props.case_id or 'this image'} lack the reorientation; re-run "
                            "autocmr_plan for this dataset")
    reo = Reorientation.from_dict(props.reorientation)
    return np.ascontiguousarray(reo.invert(array))
