"""Predict every image of a folder (NIfTI 3D, 4D cine, DICOM series) with one model: ``autocmr_predict``.

Three stages overlap, as in nnU-Net's predictor: worker processes read and preprocess the next cases
(stage 1) and resample finished predictions back to the input's space and write them (stage 3) while the
main process runs the network (stage 2). Only a few cases are read ahead, so memory stays bounded. Frames of a
4D cine are predicted and exported one by one and joined into one 4D mask with the input's exact header; by
default a cine takes the fast path instead (:mod:`autocmr.inference.fast_cine`: a cheap pass over every frame,
full accuracy on ED and ES). DICOM inputs can also get DICOM-SEG objects (:mod:`autocmr.io.dicom_seg`).

Every file is written atomically (temporary name, then rename): an interrupted run leaves no half-written
mask, and ``continue_=True`` picks up where it stopped. A case that fails (unreadable file, wrong channels,
NaN values, a crashed worker) is recorded with its file and reason and the batch goes on; ``failures.json``
and ``predictions.json`` are written into the output folder at the end.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from autocmr.errors import ConfigurationError, InputFileError, exception_text
from autocmr.inference.fast_cine import CineOptions, predict_cine_fast
from autocmr.inference.inputs import IMAGES_FROM_DICOM, CaseFailure, PredictionJob, check_complete, discover_jobs
from autocmr.inference.model_folder import ModelSpec
from autocmr.inference.parts import part_file_name
from autocmr.inference.predictor import Predictor, PredictorOptions, export_prediction, preprocess_for_model
from autocmr.io.atomic import TEMP_PREFIX, atomic_path, write_json_atomic
from autocmr.io.cine import join_frames, read_cine, write_cine
from autocmr.io.dicom import read_dicom_series
from autocmr.io.dicom_seg import OUTPUT_FORMATS, seg_output_exists, write_seg_for_series
from autocmr.io.image import Geometry, write_image
from autocmr.io.nifti import is_nifti, write_mask_like
from autocmr.io.orientation import Reorientation, canonical_reorientation
from autocmr.io.validity import captured_input_warnings, check_voxels
from autocmr.parallel import PoolTask, ResilientPool, default_workers
from autocmr.preprocessing.loading import load_case

logger = logging.getLogger(__name__)

FAILURES_JSON = "failures.json"
PREDICTIONS_JSON = "predictions.json"
MAX_AUTO_WORKERS = 3  # reading/exporting rarely needs more to keep one network busy (nnU-Net uses 3 + 3)
PENDING_EXPORTS_PER_WORKER = 2  # predicted frames waiting for export; bounds memory if export is the bottleneck


@dataclass
class BatchReport:
    """What :func:`predict_folder` did. ``timings`` maps a case name to seconds per stage."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # per case: bad input handled (autocmr.io.validity)
    uncertainty: dict[str, list[float]] = field(default_factory=dict)  # per frame; see Prediction.uncertainty
    cine: dict[str, dict[str, Any]] = field(default_factory=dict)  # fast cine path: ED/ES, full-accuracy frames
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [f"{len(self.done)} predicted, {len(self.skipped)} skipped (output exists), "
                 f"{len(self.failures)} failed in {self.wall_s:.1f} s; masks in {self.output_dir}"]
        lines += [f"  FAILED {f.name}: {f.file}: {f.reason}" for f in self.failures]
        return "\n".join(lines)


@dataclass(frozen=True)
class _ModelContext:
    """What the worker processes need from the model (picklable: no networks)."""

    plans: Any
    config: Any
    postprocessing: Any
    harmoniser: Any
    num_channels: int

    @classmethod
    def of(cls, predictor: Predictor) -> "_ModelContext":
        return cls(predictor.plans, predictor.config, predictor.postprocessing, predictor.harmoniser,
                   predictor.model.plans_channels())


@dataclass
class _Loaded:
    """Stage 1 output: network inputs with their properties, one per frame, and the output geometry."""

    units: list[tuple[np.ndarray, dict[str, Any]] | None]
    geometry: Geometry
    seconds: float
    warnings: list[str] = field(default_factory=list)


def predict_folder(input_path: str | Path, output_dir: str | Path, model: Predictor | str | Path | ModelSpec, *,
                   options: PredictorOptions | None = None, continue_: bool = False, num_parts: int = 1,
                   part_id: int = 0, save_probabilities: bool = False, num_workers: int | None = None,
                   analyse: bool = True, metadata: str | Path | None = None, cine: CineOptions | None = None,
                   output_format: str = "nifti") -> BatchReport:
    """Segment every image in ``input_path`` (a folder or one file) into ``output_dir``.

    Args:
        input_path: images (see :mod:`autocmr.inference.inputs` for what is recognised).
        output_dir: receives ``NAME.nii.gz`` masks (uint8, the input's exact geometry), optional
            ``NAME_probabilities.npz``, ``images_from_dicom/``, ``failures.json`` and ``predictions.json``.
        model: a :class:`Predictor`, a model folder, or a :class:`ModelSpec`.
        options: how to build the predictor when ``model`` is not one already.
        continue_: skip cases whose mask (and probabilities, if requested) already exist.
        num_parts, part_id: run only every ``num_parts``-th case of the sorted list, starting at ``part_id``
            (several machines share a folder); reports are then named ``failures_partK.json`` etc.
        save_probabilities: also write float16 class probabilities, (C, ...) or (t, C, ...) for a cine.
        num_workers: processes for reading and exporting; 0 runs everything here; None picks a few.
        analyse: also write measures, volume curves, QC, figures and ``report.html`` for the predicted
            subjects (see :mod:`autocmr.analysis`).
        metadata: ``cases.csv`` pairing ED/ES cases into subjects (default: one found beside the input).
        cine: how 4D cines are predicted (default: the fast path of :mod:`autocmr.inference.fast_cine`).
        output_format: "nifti", "dicom-seg" or "both"; DICOM-SEG (:mod:`autocmr.io.dicom_seg`) is written
            for DICOM inputs only, other inputs always get NIfTI masks (with a warning).

    Raises:
        AutocmrError: the model cannot be loaded, the input does not exist or holds no image, bad options.
    """
    start = time.perf_counter()
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ConfigurationError(f"part_id must be in [0, num_parts) with num_parts >= 1, got part {part_id} of "
                                 f"{num_parts}")
    if output_format not in OUTPUT_FORMATS:
        raise ConfigurationError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    predictor = _make_predictor(model, options or PredictorOptions())
    out = Path(output_dir).expanduser()
    discovery = discover_jobs(input_path, out, num_channels=predictor.model.plans_channels())
    if not discovery.jobs and not discovery.problems:
        raise InputFileError(input_path, "no images found (NIfTI/MHA/NRRD files or DICOM series)")
    _warn_non_dicom(discovery.jobs, output_format)
    out.mkdir(parents=True, exist_ok=True)
    jobs = list(discovery.jobs[part_id::num_parts])
    report = BatchReport(out, failures=list(discovery.problems) if part_id == 0 else [])
    report.skipped = [j.name for j in jobs if continue_ and _finished(j, save_probabilities, output_format)]
    todo = [j for j in jobs if j.name not in set(report.skipped)]
    names = _report_names(num_parts, part_id)
    _remove_stale_temporaries(out, todo, names)
    workers = ResilientPool(_auto_workers(len(todo)) if num_workers is None else max(0, num_workers))
    logger.info("%d case(s) to predict (%d skipped, %d input problem(s)) with %d worker process(es)",
                len(todo), len(report.skipped), len(report.failures), workers.num_workers)
    run = _BatchRun(predictor, _ModelContext.of(predictor), workers, save_probabilities, report,
                    cine=cine or CineOptions(), output_format=output_format)
    try:
        run.run(todo)
    finally:
        workers.close()
        run.bar.close()
    report.wall_s = time.perf_counter() - start
    report.done.sort()
    report.failures.sort(key=lambda f: (f.name, f.file))
    _write_reports(report, predictor, input_path, jobs, names, (num_parts, part_id))
    if analyse:  # imported here: the analysis sits above inference in the data flow
        from autocmr.analysis.pipeline import analyse_batch

        analyse_batch(report, jobs, input_path, metadata=metadata, part=(num_parts, part_id))
    logger.info("%s", report.summary().splitlines()[0])
    return report


def _make_predictor(model: Predictor | str | Path | ModelSpec, options: PredictorOptions) -> Predictor:
    if isinstance(model, Predictor):
        return model
    if isinstance(model, ModelSpec):
        return options.build(model.resolve(options.device))
    return options.build(model)


def _auto_workers(n_jobs: int) -> int:
    # Starting a process costs seconds (torch import); a single case is faster in this process.
    return 0 if n_jobs <= 1 else min(MAX_AUTO_WORKERS, max(1, default_workers() // 2))


def _finished(job: PredictionJob, save_probabilities: bool, output_format: str = "nifti") -> bool:
    wants_seg, wants_nifti = _writes_seg(job, output_format), _writes_nifti(job, output_format)
    return ((not wants_nifti or job.output.is_file()) and (not wants_seg or seg_output_exists(job.output))
            and (not save_probabilities or job.probabilities_path.is_file()))


def _writes_seg(job: PredictionJob, output_format: str) -> bool:
    return job.kind == "dicom" and output_format != "nifti"


def _writes_nifti(job: PredictionJob, output_format: str) -> bool:
    return not (job.kind == "dicom" and output_format == "dicom-seg")


def _warn_non_dicom(jobs: Sequence[PredictionJob], output_format: str) -> None:
    others = [j.name for j in jobs if j.kind != "dicom"]
    if output_format != "nifti" and others:
        logger.warning("--output-format %s: DICOM-SEG needs a DICOM source series; %d input(s) that are not DICOM "
                       "(e.g. %s) get NIfTI masks", output_format, len(others), others[0])


def _report_names(num_parts: int, part_id: int) -> tuple[str, str]:
    return part_file_name(FAILURES_JSON, num_parts, part_id), part_file_name(PREDICTIONS_JSON, num_parts, part_id)


def _remove_stale_temporaries(out: Path, jobs: Sequence[PredictionJob], names: Sequence[str]) -> None:
    """Delete temporaries an interrupted run left for *these* outputs (other parts may be writing now)."""
    targets = set(names) | {p.name for j in jobs for p in (j.output, j.probabilities_path, j.image_copy) if p}
    for folder in (out, out / IMAGES_FROM_DICOM):
        if folder.is_dir():
            for item in folder.iterdir():
                parts = item.name.split("_", 2)  # ".tmp", random hex, target name (see autocmr.io.atomic)
                if item.name.startswith(TEMP_PREFIX) and len(parts) == 3 and parts[2] in targets:
                    item.unlink(missing_ok=True)


def _write_reports(report: BatchReport, predictor: Predictor, input_path: str | Path, jobs: Sequence[PredictionJob],
                   names: tuple[str, str], part: tuple[int, int]) -> None:
    failures_name, predictions_name = names
    write_json_atomic(report.output_dir / failures_name, [f.to_dict() for f in report.failures])
    path = report.output_dir / predictions_name
    cases: dict[str, Any] = {}
    try:  # keep what an earlier run (continued now) recorded about the cases it predicted
        cases = json.loads(path.read_text()).get("cases", {}) if path.is_file() else {}
    except (ValueError, AttributeError, OSError):
        cases = {}
    by_name = {j.name: j for j in jobs}
    for name in report.done:
        job = by_name[name]
        cases[name] = {"kind": job.kind, "sources": [str(s) for s in job.sources], "output": str(job.output),
                       "seconds": {k: round(v, 3) for k, v in report.timings[name].items()},
                       "warnings": report.warnings.get(name, []),
                       "uncertainty": [u if u == u else None for u in report.uncertainty.get(name, [])]}  # NaN: null
        if name in report.cine:
            cases[name]["cine"] = report.cine[name]
    write_json_atomic(path, {"predictor": predictor.describe(), "input": str(input_path),
                             "num_parts": part[0], "part_id": part[1], "wall_s": round(report.wall_s, 3),
                             "done": report.done, "skipped": report.skipped,
                             "failed": [f.name for f in report.failures],
                             "cases": dict(sorted(cases.items()))})


# --------------------------------------------------------------------------------- stages (worker side)


class _StageError(Exception):
    """A case's error carried out of a worker as plain text: library exceptions (and autocmr's
    InputFileError, whose constructor takes two arguments) do not always survive pickling."""

    def __init__(self, file: str | None, reason: str) -> None:
        super().__init__(file, reason)
        self.file, self.reason = file, reason


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Run one stage; any error becomes a :class:`_StageError` naming the file at fault when known."""
    try:
        return fn(*args)
    except InputFileError as exc:
        raise _StageError(str(exc.path), exc.reason) from None
    except Exception as exc:  # noqa: BLE001 - reported for this case only
        raise _StageError(None, exception_text(exc)) from None


def _load_job(job: PredictionJob, ctx: _ModelContext) -> _Loaded:
    """Stage 1, recording what the readers warned about (a corrected header, irregular DICOM slices...)."""
    with captured_input_warnings() as notes:
        loaded = _read_and_preprocess(job, ctx)
    loaded.warnings[:0] = notes
    return loaded


def _read_and_preprocess(job: PredictionJob, ctx: _ModelContext) -> _Loaded:
    """Read the job's image(s), bring each frame to canonical order and preprocess it."""
    start = time.perf_counter()
    for source in job.sources if job.kind != "dicom" else ():
        check_complete(source)
    if job.kind == "3d":
        case = load_case(job.sources)
        units = [_preprocess(case.data, case.spacing, case.reorientation, ctx, job.source)]
        return _Loaded(units, case.geometry, time.perf_counter() - start)
    if job.kind == "cine":
        frames, geometry = read_cine(job.sources[0])
        warnings = check_voxels(frames, job.sources[0], frame_axis=0)  # one policy for every path
    else:
        volume = read_dicom_series(job.sources)
        frames, geometry = volume.array, volume.geometry
        warnings = check_voxels(frames, job.source, frame_axis=0 if volume.is_cine else None)
        _write_volume(frames, geometry, job.image_copy)
        frames = frames if volume.is_cine else frames[None]
    reo = canonical_reorientation(geometry)
    spacing = reo.spacing(geometry.spatial().spacing_zyx)
    units = [_preprocess(np.ascontiguousarray(reo.apply(frame[None].astype(np.float32, copy=False))), spacing, reo,
                         ctx, job.source) for frame in frames]
    return _Loaded(units, geometry, time.perf_counter() - start, warnings)


def _preprocess(data: np.ndarray, spacing: Sequence[float], reorientation: Reorientation, ctx: _ModelContext,
                source: Path) -> tuple[np.ndarray, dict[str, Any]]:
    return preprocess_for_model(data, spacing, reorientation, ctx.plans, ctx.config, ctx.harmoniser, source=source)


def _export_unit(probabilities: np.ndarray, props: dict[str, Any], ctx: _ModelContext,
                 with_probabilities: bool) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Stage 3a: probabilities in network space -> uint8 mask (and float16 probabilities) in stored order."""
    start = time.perf_counter()
    prediction = export_prediction(torch.from_numpy(probabilities), props, ctx.plans, ctx.config, ctx.postprocessing,
                                   return_probabilities=with_probabilities)
    probs = prediction.probabilities.astype(np.float16) if prediction.probabilities is not None else None
    return prediction.label.astype(np.uint8, copy=False), probs, time.perf_counter() - start


def _write_job(job: PredictionJob, labels: list[np.ndarray], probabilities: list[np.ndarray] | None,
               geometry: Geometry, output_format: str = "nifti", phase_notes: dict[int, str] | None = None) -> float:
    """Stage 3b: write the mask (and probabilities) atomically with the input's geometry, and/or DICOM-SEG."""
    start = time.perf_counter()
    if _writes_seg(job, output_format):
        mask = join_frames(labels, geometry) if geometry.dim == 4 else labels[0]
        write_seg_for_series(mask, job.sources, job.output, phase_notes=phase_notes)
        if not _writes_nifti(job, output_format):
            return time.perf_counter() - start
    if probabilities is not None:
        probs = np.stack(probabilities) if geometry.dim == 4 else probabilities[0]
        with atomic_path(job.probabilities_path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, probabilities=probs)
    mask = join_frames(labels, geometry) if geometry.dim == 4 else labels[0]
    template = job.sources[0] if job.kind != "dicom" and is_nifti(job.sources[0]) else None
    # A NIfTI input's own header (qform, sform, codes) goes to its mask, so it overlays in every viewer.
    if template is None or not write_mask_like(mask, geometry, job.output, template):
        _write_volume(mask, geometry, job.output)
    return time.perf_counter() - start


def _write_volume(array: np.ndarray, geometry: Geometry, path: Path | None) -> None:
    if path is not None:
        (write_cine if geometry.dim == 4 else write_image)(array, geometry, path)


# --------------------------------------------------------------------------------- scheduling (main side)


@dataclass
class _JobState:
    job: PredictionJob
    geometry: Geometry
    labels: list[np.ndarray | None]
    probabilities: list[np.ndarray | None]
    seconds: dict[str, float]
    failed: bool = False
    phase_notes: dict[int, str] | None = None  # fast cine path: how each frame was predicted (for DICOM-SEG)
    warnings: list[str] = field(default_factory=list)
    uncertainty: list[float] = field(default_factory=list)  # per frame, in frame order


class _BatchRun:
    """Feeds stage 1 a few cases ahead, runs the network here, hands exports and writes to the workers."""

    def __init__(self, predictor: Predictor, ctx: _ModelContext, workers: ResilientPool, save_probabilities: bool,
                 report: BatchReport, *, cine: CineOptions = CineOptions(), output_format: str = "nifti") -> None:
        self.predictor, self.ctx, self.workers, self.report = predictor, ctx, workers, report
        self.save_probabilities = save_probabilities
        self.cine, self.output_format = cine, output_format
        self.prefetch = max(1, workers.num_workers + 1)
        self.max_exports = max(1, PENDING_EXPORTS_PER_WORKER * workers.num_workers)
        self.loads: deque[tuple[PredictionJob, PoolTask]] = deque()
        self.exports: list[tuple[_JobState, int, PoolTask]] = []
        self.writes: list[tuple[_JobState, PoolTask]] = []
        self.bar = tqdm(total=0, desc="predicting", unit="case", disable=None)

    def run(self, jobs: Sequence[PredictionJob]) -> None:
        self.bar.reset(total=len(jobs))
        queue = deque(jobs)
        self._fill(queue)
        while self.loads:
            job, task = self.loads.popleft()
            self._fill(queue)  # the next cases load while this one is predicted
            try:
                loaded = self.workers.result(task)
            except Exception as exc:  # noqa: BLE001 - any error in one case is reported, the batch goes on
                self._fail(job, exc)
                continue
            self._predict(job, loaded)
        while self.exports or self.writes:
            self._collect(block=True)

    def _fill(self, queue: deque[PredictionJob]) -> None:
        while queue and len(self.loads) < self.prefetch:
            job = queue.popleft()
            self.loads.append((job, self.workers.submit(_guarded, _load_job, job, self.ctx)))

    def _predict(self, job: PredictionJob, loaded: _Loaded) -> None:
        n = len(loaded.units)
        state = _JobState(job, loaded.geometry, [None] * n, [None] * n,
                          {"load_s": loaded.seconds, "predict_s": 0.0, "export_s": 0.0, "frames": n},
                          warnings=loaded.warnings)
        if n > 1 and self.cine.mode == "fast":
            self._predict_cine_fast(state, loaded)
            return
        for index in range(n):
            pre, props = loaded.units[index]  # type: ignore[misc]
            loaded.units[index] = None  # free each frame's input once predicted
            t0 = time.perf_counter()
            try:
                probs_tensor, uncertainty = self.predictor.probabilities_and_uncertainty(pre)
                probs = probs_tensor.float().cpu().numpy()
                state.uncertainty.append(uncertainty)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory on this case only
                self._fail(job, exc, state)
                return
            state.seconds["predict_s"] += time.perf_counter() - t0
            task = self.workers.submit(_guarded, _export_unit, probs, props, self.ctx, self.save_probabilities)
            self.exports.append((state, index, task))
            self._collect(block=False)
            while len(self.exports) > self.max_exports:
                self._collect(block=True)

    def _predict_cine_fast(self, state: _JobState, loaded: _Loaded) -> None:
        """All frames of a cine at once (they are exported here: ED/ES come from the exported masks)."""
        t0 = time.perf_counter()
        voxel_ml = float(np.prod(state.geometry.spatial().spacing)) / 1000.0
        try:
            result = predict_cine_fast(self.predictor, loaded.units, voxel_ml,  # type: ignore[arg-type]
                                       options=self.cine, with_probabilities=self.save_probabilities)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on this case only
            self._fail(state.job, exc, state)
            return
        loaded.units.clear()
        state.seconds["predict_s"] = time.perf_counter() - t0  # export included (done while predicting)
        state.labels, state.probabilities = list(result.labels), list(result.probabilities)
        state.uncertainty, state.phase_notes = result.uncertainty, result.phase_notes()
        self.report.cine[state.job.name] = result.describe()
        self._submit_write(state)
        self._collect(block=False)

    def _submit_write(self, state: _JobState) -> None:
        probabilities = state.probabilities if self.save_probabilities else None
        self.writes.append((state, self.workers.submit(_guarded, _write_job, state.job, state.labels, probabilities,
                                                       state.geometry, self.output_format, state.phase_notes)))

    def _collect(self, *, block: bool) -> None:
        """Handle finished exports (submitting a job's write once all its frames are in) and writes."""
        if block and self.exports + self.writes and not any(t.future.done() for *_, t in self.exports + self.writes):
            self.workers.wait_any([t for *_, t in self.exports] + [t for _, t in self.writes])
        for item in [e for e in self.exports if e[2].future.done()]:
            self.exports.remove(item)
            state, index, task = item
            try:
                label, probs, seconds = self.workers.result(task)
            except Exception as exc:  # noqa: BLE001
                self._fail(state.job, exc, state)
                continue
            state.labels[index], state.probabilities[index] = label, probs
            state.seconds["export_s"] += seconds
            if not state.failed and all(lab is not None for lab in state.labels):
                self._submit_write(state)
        for item in [w for w in self.writes if w[1].future.done()]:
            self.writes.remove(item)
            state, task = item
            try:
                state.seconds["write_s"] = self.workers.result(task)
            except Exception as exc:  # noqa: BLE001
                self._fail(state.job, exc, state)
                continue
            self.report.done.append(state.job.name)
            self.report.timings[state.job.name] = state.seconds
            self.report.warnings[state.job.name] = state.warnings
            self.report.uncertainty[state.job.name] = state.uncertainty
            self.bar.update()

    def _fail(self, job: PredictionJob, exc: BaseException, state: _JobState | None = None) -> None:
        if state is not None:
            if state.failed:
                return
            state.failed = True
        if isinstance(exc, _StageError):
            failure = CaseFailure(job.name, exc.file or str(job.source), exc.reason)
        elif isinstance(exc, InputFileError):
            failure = CaseFailure(job.name, str(exc.path), exc.reason)
        else:
            failure = CaseFailure(job.name, str(job.source), exception_text(exc))
        logger.debug("%s failed", job.name, exc_info=exc)
        logger.warning("%s failed: %s: %s", job.name, failure.file, failure.reason)
        self.report.failures.append(failure)
        self.bar.update()


__all__ = ["BatchReport", "ModelSpec", "PredictorOptions", "predict_folder"]
