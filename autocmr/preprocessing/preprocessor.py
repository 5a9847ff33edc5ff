"""Preprocess cases for one configuration: transpose, crop to non-zero, normalise, resample, store.

The same :func:`preprocess_arrays` serves training data and images at inference, so both see identical
preprocessing. Properties keep everything needed to map a prediction back to the input's native space.
"""
from __future__ import annotations

import hashlib
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from autocmr.dataset.naming import RESERVED_CASE_IDS, STORED_FILE_SUFFIXES, colliding_case_ids
from autocmr.dataset.raw import RawCase, RawDataset, hash_file_stats
from autocmr.documents.case_properties import CaseProperties
from autocmr.documents.plans import Configuration, Plans
from autocmr.errors import DatasetError
from autocmr.io.atomic import SHARED_FOLDER_STALE_S, remove_stale_temporaries
from autocmr.parallel import default_workers, run_all
from autocmr.preprocessing import storage
from autocmr.preprocessing.cropping import crop, nonzero_bbox
from autocmr.preprocessing.loading import load_case
from autocmr.preprocessing.normalization import normalize
from autocmr.preprocessing.resampling import resample_image, resample_label, target_shape, through_plane_nearest

logger = logging.getLogger(__name__)

MAX_LOCATIONS_PER_CLASS = 10_000  # sampled voxels per foreground class for oversampling
MIN_LOCATION_COVERAGE = 0.01  # ...or 1 % of the class' voxels when that is more


def config_target_spacing(config: Configuration, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Target spacing for a case: the ``2d`` configuration keeps the case's own slice spacing."""
    if config.resampling.resample_through_plane:
        return config.spacing
    return (float(spacing[0]),) + tuple(config.spacing[1:])  # type: ignore[return-value]


def preprocess_arrays(data: np.ndarray, seg: np.ndarray | None, spacing: tuple[float, float, float],
                      plans: Plans, config: Configuration) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Canonical-order arrays -> network-ready arrays and the properties needed to undo it."""
    order = plans.transpose_forward
    data = np.ascontiguousarray(data.transpose((0,) + tuple(a + 1 for a in order)))
    if seg is not None:
        seg = np.ascontiguousarray(seg.transpose(order))
    spacing_t = tuple(float(spacing[a]) for a in order)
    shape_before_crop = tuple(int(n) for n in data.shape[1:])
    bbox = nonzero_bbox(data)
    data = crop(data, bbox)
    seg = crop(seg, bbox) if seg is not None else None
    data = normalize(data, config.normalization, config.use_mask_for_norm, plans.intensity)
    new_spacing = config_target_spacing(config, spacing_t)
    new_shape = target_shape(data.shape[1:], spacing_t, new_spacing)
    anisotropic = through_plane_nearest(config.resampling.anisotropic, spacing_t)
    data = resample_image(data, new_shape, anisotropic=anisotropic, order=config.resampling.image_order)
    if seg is not None:
        seg = resample_label(seg, new_shape, anisotropic=anisotropic)
    props = {
        "spacing": list(spacing_t), "target_spacing": list(new_spacing),
        "shape_before_crop": list(shape_before_crop), "bbox": [list(b) for b in bbox],
        "shape_after_crop": [b - a for a, b in bbox], "shape_after_resampling": list(new_shape),
    }
    return data, seg, props


def sample_locations(seg: np.ndarray, classes: list[int], seed: int) -> dict[int, np.ndarray]:
    """Up to ``MAX_LOCATIONS_PER_CLASS`` (z, y, x) coordinates of each foreground class (seeded)."""
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    for cls in classes:
        coords = np.argwhere(seg == cls)
        n = min(len(coords), max(MAX_LOCATIONS_PER_CLASS, int(np.ceil(len(coords) * MIN_LOCATION_COVERAGE))))
        out[cls] = coords[rng.choice(len(coords), n, replace=False)] if n < len(coords) else coords
    return out


def case_signature(case: RawCase, config: Configuration) -> str:
    """Changes when the case's raw files or the configuration's preprocessing do: stored data are then stale."""
    h = hashlib.sha256(config.data_identifier.encode())
    if config.resampling.resample_through_plane and not config.resampling.anisotropic:
        # Only here may a case's own thick slices change its through-plane resampling (through_plane_nearest,
        # 2026-11-29): data stored before that rule are redone; every other configuration keeps its data.
        h.update(b"per-case-through-plane-rule")
    # Label ties at resampling go to the nearest label, no longer to background (resample_label, 2026-11-30):
    # stored labels made before were eroded wherever a case was resampled.
    h.update(b"label-resampling-nearest-tie-break")
    if any(config.use_mask_for_norm):  # the mask's in-slice holes are filled (foreground_mask, 2026-11-30)
        h.update(b"normalisation-mask-holes-filled")
    hash_file_stats(h, case.files)
    return h.hexdigest()[:16]


def preprocess_case(case: RawCase, plans: Plans, config: Configuration, out_folder: Path, seed: int = 0) -> str:
    """Read, preprocess and store one training case; returns its case id."""
    loaded = load_case(case.images, case.label)
    data, seg, props = preprocess_arrays(loaded.data, loaded.seg, loaded.spacing, plans, config)
    classes = [c for c in plans.foreground_labels]
    locations = sample_locations(seg, classes, seed=zlib.crc32(case.case_id.encode()) + seed) if seg is not None else {}
    props.update({
        "case_id": case.case_id, "signature": case_signature(case, config),
        "geometry": loaded.geometry.to_dict(), "reorientation": loaded.reorientation.to_dict(),
        "classes": sorted(int(v) for v in np.unique(seg)) if seg is not None else [],
    })
    storage.save_case(out_folder, case.case_id, data, seg, locations, CaseProperties.from_dict(props).to_dict())
    return case.case_id


def preprocess_stale_cases(raw: RawDataset, plans: Plans, config: Configuration, folder: Path, *,
                           num_workers: int | None = None, seed: int = 0, pool: Any = None) -> tuple[int, int]:
    """Preprocess the cases of ``raw`` whose stored data in ``folder`` are missing or stale (see
    :func:`case_signature`); returns (cases preprocessed, cases already current). ``num_workers`` None: about
    one process per 8 cases, at most :func:`~autocmr.parallel.default_workers`. Raises :class:`DatasetError`
    listing every case that failed."""
    clashes = colliding_case_ids({c.case_id for c in raw.cases})
    if clashes:  # refused before anything is written: one case's image would overwrite the other's label map
        named = ", ".join(f"{a} and {b}" for a, b in clashes)
        raise DatasetError(f"{raw.root}: case ids {named} cannot be stored side by side ({clashes[0][1]}.b2nd "
                           f"would be both {clashes[0][0]}'s label file and {clashes[0][1]}'s image); rename one "
                           f"(ids must not end in {' or '.join(STORED_FILE_SUFFIXES)} when the rest is a case too)")
    reserved = sorted(RESERVED_CASE_IDS & {c.case_id for c in raw.cases})
    if reserved:  # the folder's configuration.json would overwrite that case's properties, every time
        raise DatasetError(f"{raw.root}: case id {reserved[0]!r} is reserved (the preprocessed folder's "
                           f"{reserved[0]}.json); rename the case")
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder, older_than_s=SHARED_FOLDER_STALE_S)  # other folds may be writing here
    gone = sorted(set(storage.list_cases(folder)) - {c.case_id for c in raw.cases})
    for case_id in gone:  # removed from the raw dataset (re-converted): training would still list it
        storage.remove_case(folder, case_id)
    if gone:
        logger.warning("%s: %d stored case(s) no longer in the raw dataset removed (e.g. %s)", folder, len(gone),
                       gone[:3])
    todo = [c for c in raw.cases if not storage.is_current(folder, c.case_id, case_signature(c, config))]
    if num_workers is None:
        num_workers = min(default_workers(), max(1, len(todo) // 8))
    jobs = [(c.case_id, (c, plans, config, folder, seed)) for c in todo]
    _, failures = run_all(preprocess_case, jobs, num_workers=num_workers, pool=pool, desc=f"preprocess {config.name}")
    if failures:
        listing = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        raise DatasetError(f"{raw.root}: {len(failures)} case(s) failed to preprocess for {config.name}:\n{listing}")
    return len(todo), len(raw.cases) - len(todo)
