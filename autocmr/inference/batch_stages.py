"""The worker side of batch prediction: read and preprocess a case (stage 1), export a predicted frame to the
input's space (stage 3a) and write a case's mask, probabilities and DICOM-SEG (stage 3b).

Each stage is a plain function of picklable arguments, so :class:`autocmr.parallel.ResilientPool` can run it
in a worker process (or here, with no workers); :func:`guarded` turns any error into a :class:`StageError`
naming the file at fault. Stage 2, the network, runs in the main process
(:mod:`autocmr.inference.batch_scheduler`).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from autocmr.errors import InputFileError, exception_text
from autocmr.inference.inputs import PredictionJob
from autocmr.inference.predictor import Predictor, clear_slices, export_prediction, preprocess_for_model
from autocmr.io.atomic import atomic_path
from autocmr.io.cine import join_frames, read_cine, write_cine
from autocmr.io.completeness import check_complete
from autocmr.io.dicom import read_dicom_series
from autocmr.io.dicom_seg import seg_destination, write_seg_for_series
from autocmr.io.image import Geometry, write_image
from autocmr.io.nifti import is_nifti, write_mask_like
from autocmr.io.orientation import Reorientation, canonical_reorientation, slices_cut_across
from autocmr.io.validity import captured_input_warnings, check_voxels, constant_frames
from autocmr.preprocessing.loading import load_case
from autocmr.preprocessing.other_phase import pair_aligned, with_partner


@dataclass(frozen=True)
class ModelContext:
    """What the worker processes need from the model (picklable: no networks)."""

    plans: Any
    config: Any
    postprocessing: Any
    harmoniser: Any
    num_channels: int

    @classmethod
    def of(cls, predictor: Predictor) -> "ModelContext":
        return cls(predictor.plans, predictor.config, predictor.postprocessing, predictor.harmoniser,
                   predictor.model.plans_channels())


@dataclass
class LoadedCase:
    """Stage 1 output: network inputs with their properties, one per frame, and the output geometry."""

    units: list[tuple[np.ndarray, dict[str, Any]] | None]
    geometry: Geometry
    seconds: float
    warnings: list[str] = field(default_factory=list)
    blank_frames: list[int] = field(default_factory=list)  # a cine's frames without image content
    missing_slices: list[int] = field(default_factory=list)  # slices no DICOM image fills (autocmr.io.dicom)


class StageError(Exception):
    """A case's error carried out of a worker as plain text: library exceptions (and autocmr's
    InputFileError, whose constructor takes two arguments) do not always survive pickling."""

    def __init__(self, file: str | None, reason: str) -> None:
        super().__init__(file, reason)
        self.file, self.reason = file, reason


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Run one stage; any error becomes a :class:`StageError` naming the file at fault when known."""
    try:
        return fn(*args)
    except InputFileError as exc:
        raise StageError(str(exc.path), exc.reason) from None
    except Exception as exc:  # noqa: BLE001 - reported for this case only
        raise StageError(None, exception_text(exc)) from None


def writes_seg(job: PredictionJob, output_format: str) -> bool:
    """Whether this job gets a DICOM-SEG object (single-frame DICOM sources only: a SEG on the frames of an
    enhanced multi-frame file is not written yet)."""
    return job.kind == "dicom" and not job.multiframe and output_format != "nifti"


def writes_nifti(job: PredictionJob, output_format: str) -> bool:
    """Whether this job gets a NIfTI mask (every job but one that gets DICOM-SEG only)."""
    return not (writes_seg(job, output_format) and output_format == "dicom-seg")


def load_job(job: PredictionJob, ctx: ModelContext) -> LoadedCase:
    """Stage 1, recording what the readers warned about (a corrected header, irregular DICOM slices...)."""
    with captured_input_warnings() as notes:
        loaded = _read_and_preprocess(job, ctx)
    loaded.warnings[:0] = notes
    return loaded


def _read_and_preprocess(job: PredictionJob, ctx: ModelContext) -> LoadedCase:
    """Read the job's image(s), bring each frame to canonical order and preprocess it."""
    start = time.perf_counter()
    for source in job.sources if job.kind != "dicom" else ():
        check_complete(source)
    if job.kind == "3d":
        case = load_case(job.sources)
        unit = _preprocess(case.data, case.spacing, case.reorientation, ctx, job.source)
        warnings = _cut_across(case.geometry, case.reorientation, ctx)
        if ctx.config.other_phase:
            unit = _with_other_phase(unit, case.geometry, job, ctx, warnings)
        return LoadedCase([unit], case.geometry, time.perf_counter() - start, warnings)
    missing: list[int] = []
    if job.kind == "cine":
        frames, geometry = read_cine(job.sources[0])
        warnings = check_voxels(frames, job.sources[0], frame_axis=0)  # one policy for every path
    else:
        volume = read_dicom_series(job.sources)
        missing = list(volume.missing_slices)
        frames, geometry = volume.array, volume.geometry
        warnings = check_voxels(frames, job.source, frame_axis=0 if volume.is_cine else None)
        _write_volume(frames, geometry, job.image_copy)
        frames = frames if volume.is_cine else frames[None]
        if ctx.config.other_phase and not volume.is_cine:
            warnings.append("the model takes the other cardiac phase, and separate ED and ES DICOM series are not "
                            "paired: predicted with the image itself in its place (a cine series is paired)")
    reo = canonical_reorientation(geometry)
    warnings += _cut_across(geometry, reo, ctx)
    spacing = reo.spacing(geometry.spatial().spacing_zyx)
    blank = constant_frames(frames, 0) if len(frames) > 1 else []
    units = [_preprocess(np.ascontiguousarray(reo.apply(frame[None].astype(np.float32, copy=False))), spacing, reo,
                         ctx, job.source) for frame in frames]
    return LoadedCase(units, geometry, time.perf_counter() - start, warnings, blank, missing)


def _cut_across(geometry: Geometry, reorientation: Reorientation, ctx: ModelContext) -> list[str]:
    """The warning for a 2D model on a stack it would segment across its slices (see slices_cut_across)."""
    why = slices_cut_across(geometry, reorientation) if ctx.config.dim == 2 else None
    return [why] if why else []


def _with_other_phase(unit: tuple[np.ndarray, dict[str, Any]], geometry: Geometry, job: PredictionJob,
                      ctx: ModelContext, warnings: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """A 3D job's network input with its other phase's channels (:mod:`autocmr.preprocessing.other_phase`):
    the partner read and preprocessed as the job itself, or, when there is none, it cannot be read or it does
    not lie on the job's voxel grid, the image itself (with a warning saying so)."""
    pre, props = unit
    if not job.partner_sources:
        warnings.append("no other cardiac phase found for this volume (the model takes it as input): predicted "
                        "with the image itself in its place")
    else:
        try:
            for source in job.partner_sources:
                check_complete(source)
            other = load_case(job.partner_sources)
            other_pre, other_props = _preprocess(other.data, other.spacing, other.reorientation, ctx,
                                                 job.partner_sources[0])
        except Exception as exc:  # noqa: BLE001 - the job itself is fine: predicted without its partner
            warnings.append(f"other phase {job.partner_sources[0].name} unreadable ({exception_text(exc)}): "
                            "predicted with the image itself in its place")
        else:
            paired, problem = pair_aligned(pre, {**props, "geometry": _header(geometry)}, other_pre,
                                           {**other_props, "geometry": _header(other.geometry)})
            if problem:
                warnings.append(f"{job.partner_sources[0].name}: {problem}; predicted with the image itself in "
                                "its place")
            return paired, props
    return with_partner(pre), props


def _header(geometry: Geometry) -> dict[str, Any]:
    """What :func:`autocmr.preprocessing.other_phase.aligned` compares of an input's header."""
    return {"spacing": list(geometry.spacing), "origin": list(geometry.origin), "direction": list(geometry.direction)}


def _preprocess(data: np.ndarray, spacing: Sequence[float], reorientation: Reorientation, ctx: ModelContext,
                source: Path) -> tuple[np.ndarray, dict[str, Any]]:
    return preprocess_for_model(data, spacing, reorientation, ctx.plans, ctx.config, ctx.harmoniser, source=source)


def export_unit(probabilities: np.ndarray, props: dict[str, Any], ctx: ModelContext,
                with_probabilities: bool) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Stage 3a: probabilities in network space -> uint8 mask (and float16 probabilities) in stored order."""
    start = time.perf_counter()
    prediction = export_prediction(torch.from_numpy(probabilities), props, ctx.plans, ctx.config, ctx.postprocessing,
                                   return_probabilities=with_probabilities)
    probs = prediction.probabilities.astype(np.float16) if prediction.probabilities is not None else None
    return prediction.label.astype(np.uint8, copy=False), probs, time.perf_counter() - start


def write_job(job: PredictionJob, labels: list[np.ndarray], probabilities: list[np.ndarray] | None,
              geometry: Geometry, output_format: str = "nifti", phase_notes: dict[int, str] | None = None,
              missing_slices: Sequence[int] = ()) -> float:
    """Stage 3b: write the mask (and probabilities) atomically with the input's geometry, and/or DICOM-SEG.
    ``missing_slices``: slices of a DICOM stack no image fills (zero in the image): nothing is segmented there.

    The NIfTI mask and the probabilities are written before the SEG, so that with ``--output-format both`` a
    SEG that cannot be built (source headers highdicom refuses) costs the SEG only: the case is then reported
    as failed with a reason that says the SEG is missing and the NIfTI mask was written, and the mask stays
    (a SEG an earlier run wrote for it is removed: it would not match). The case has no record in
    ``predictions.json``, so ``--continue`` predicts it again (its SEG is missing).
    """
    start = time.perf_counter()
    for index, label in enumerate(labels):  # masks are (z, y, x) in the series' stored order
        clear_slices(label, probabilities[index] if probabilities is not None else None, missing_slices)
    mask = join_frames(labels, geometry) if geometry.dim == 4 else labels[0]
    nifti = writes_nifti(job, output_format)
    if nifti:
        _write_mask(job, mask, probabilities, geometry)
    if writes_seg(job, output_format):
        try:
            write_seg_for_series(mask, job.sources, job.output, phase_notes=phase_notes)
        except Exception as exc:  # noqa: BLE001 - reported for this case's SEG, naming what it kept
            if not nifti:
                raise
            _remove_seg(job.output)  # an earlier run's SEG would no longer match the mask just written
            path, reason = (exc.path, exc.reason) if isinstance(exc, InputFileError) else \
                (job.source, exception_text(exc))
            kept = (f"the NIfTI mask {job.output.name} and its probabilities were" if probabilities is not None
                    else f"the NIfTI mask {job.output.name} was")
            raise InputFileError(path, f"DICOM-SEG not written ({kept} written): {reason}") from exc
    return time.perf_counter() - start


def _write_mask(job: PredictionJob, mask: np.ndarray, probabilities: list[np.ndarray] | None,
                geometry: Geometry) -> None:
    """The NIfTI mask (and probabilities), atomically, with the input's geometry."""
    if probabilities is not None:
        probs = np.stack(probabilities) if geometry.dim == 4 else probabilities[0]
        with atomic_path(job.probabilities_path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, probabilities=probs)
    template = job.sources[0] if job.kind != "dicom" and is_nifti(job.sources[0]) else None
    # A NIfTI input's own header (qform, sform, codes) goes to its mask, so it overlays in every viewer.
    if template is None or not write_mask_like(mask, geometry, job.output, template):
        _write_volume(mask, geometry, job.output)


def _remove_seg(mask_path: Path) -> None:
    """The SEG file or per-phase folder beside the mask at ``mask_path``, if any."""
    for stale in (seg_destination(mask_path, cine=False), seg_destination(mask_path, cine=True)):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        elif stale.is_file():
            stale.unlink(missing_ok=True)


def _write_volume(array: np.ndarray, geometry: Geometry, path: Path | None) -> None:
    if path is not None:
        (write_cine if geometry.dim == 4 else write_image)(exact_integer_copy(array), geometry, path)


def exact_integer_copy(array: np.ndarray) -> np.ndarray:
    """``array`` as int16 or uint16 when that holds every value exactly (DICOM pixel values usually are
    integers; the reader gives float32), else unchanged: the NIfTI copy of a 20-phase cine is then
    compressed in 0.8 instead of 2 s and is smaller."""
    if array.dtype.kind != "f" or array.size == 0 or not np.isfinite(array).all():
        return array
    low, high = float(array.min()), float(array.max())
    for dtype in (np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            candidate = array.astype(dtype)
            if np.array_equal(candidate, array):
                return candidate
            return array  # not integers: no integer type holds them
    return array


__all__ = ["LoadedCase", "ModelContext", "StageError", "export_unit", "guarded", "load_job", "write_job",
           "writes_nifti", "writes_seg"]
