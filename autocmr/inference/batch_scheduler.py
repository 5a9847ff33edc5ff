"""The main side of batch prediction: keeps the worker stages (:mod:`autocmr.inference.batch_stages`) busy
while the network runs here.

Three stages overlap, as in nnU-Net's predictor: workers read and preprocess the next cases (stage 1) and
export and write finished predictions (stage 3) while this process runs the network (stage 2). Only a few
cases are read ahead and only a few predicted frames wait for export, so memory stays bounded. A case that
fails at any stage is recorded in the :class:`BatchReport` and the batch goes on.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from autocmr.errors import InputFileError, exception_text
from autocmr.inference.batch_report import BatchReport
from autocmr.inference.batch_stages import (LoadedCase, ModelContext, StageError, export_unit, guarded, load_job,
                                            write_job)
from autocmr.inference.fast_cine import CineOptions, predict_cine_fast
from autocmr.inference.inputs import CaseFailure, PredictionJob
from autocmr.inference.predictor import Predictor
from autocmr.io.image import Geometry
from autocmr.parallel import PoolTask, ResilientPool

logger = logging.getLogger(__name__)

PENDING_EXPORTS_PER_WORKER = 2  # predicted frames waiting for export; bounds memory if export is the bottleneck


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
    missing_slices: list[int] = field(default_factory=list)  # slices no DICOM image fills: their mask stays 0


class BatchScheduler:
    """Feeds stage 1 a few cases ahead, runs the network here, hands exports and writes to the workers."""

    def __init__(self, predictor: Predictor, workers: ResilientPool, save_probabilities: bool,
                 report: BatchReport, *, cine: CineOptions = CineOptions(), output_format: str = "nifti",
                 on_case_done: Callable[[PredictionJob], None] | None = None) -> None:
        self.predictor, self.ctx, self.workers, self.report = predictor, ModelContext.of(predictor), workers, report
        self.save_probabilities = save_probabilities
        self.cine, self.output_format = cine, output_format
        self.prefetch = max(1, workers.num_workers + 1)
        self.max_exports = max(1, PENDING_EXPORTS_PER_WORKER * workers.num_workers)
        self.loads: deque[tuple[PredictionJob, PoolTask]] = deque()
        self.exports: list[tuple[_JobState, int, PoolTask]] = []
        self.writes: list[tuple[_JobState, PoolTask]] = []
        self.bar = tqdm(total=0, desc="predicting", unit="case", disable=None)
        self.on_case_done = on_case_done  # e.g. journal the case, so an interrupted batch keeps its records

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

    def close(self) -> None:
        self.bar.close()

    def _fill(self, queue: deque[PredictionJob]) -> None:
        while queue and len(self.loads) < self.prefetch:
            job = queue.popleft()
            self.loads.append((job, self.workers.submit(guarded, load_job, job, self.ctx)))

    def _predict(self, job: PredictionJob, loaded: LoadedCase) -> None:
        n = len(loaded.units)
        if loaded.blank_frames:
            self.report.blank_frames[job.name] = list(loaded.blank_frames)
        state = _JobState(job, loaded.geometry, [None] * n, [None] * n,
                          {"load_s": loaded.seconds, "predict_s": 0.0, "export_s": 0.0, "frames": n},
                          warnings=loaded.warnings, missing_slices=loaded.missing_slices)
        if n > 1 and self.cine.mode == "fast":
            self._predict_cine_fast(state, loaded)
            return
        if n > 1 and self.predictor.config.other_phase:  # ED and ES are known only once every frame is predicted
            state.warnings.append("the model takes the other cardiac phase, which --cine full does not pair: each "
                                  "frame was predicted with itself in its place (the fast cine path pairs them)")
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
            task = self.workers.submit(guarded, export_unit, probs, props, self.ctx, self.save_probabilities)
            self.exports.append((state, index, task))
            self._collect(block=False)
            while len(self.exports) > self.max_exports:
                self._collect(block=True)

    def _predict_cine_fast(self, state: _JobState, loaded: LoadedCase) -> None:
        """All frames of a cine at once (they are exported here: ED/ES come from the exported masks)."""
        t0 = time.perf_counter()
        voxel_ml = float(np.prod(state.geometry.spatial().spacing)) / 1000.0
        try:
            result = predict_cine_fast(self.predictor, loaded.units, voxel_ml,  # type: ignore[arg-type]
                                       options=self.cine, with_probabilities=self.save_probabilities,
                                       blank_frames=loaded.blank_frames, missing_slices=loaded.missing_slices)
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
        self.writes.append((state, self.workers.submit(guarded, write_job, state.job, state.labels, probabilities,
                                                       state.geometry, self.output_format, state.phase_notes,
                                                       state.missing_slices)))

    def _collect(self, *, block: bool) -> None:
        """Handle finished exports (submitting a job's write once all its frames are in) and writes."""
        if block and self.exports + self.writes and not any(self._ready(t) for *_, t in self.exports + self.writes):
            self.workers.wait_any([t for *_, t in self.exports] + [t for _, t in self.writes])
        for item in [e for e in self.exports if self._ready(e[2])]:
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
        for item in [w for w in self.writes if self._ready(w[1])]:
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
            if self.on_case_done is not None:
                self.on_case_done(state.job)

    def _ready(self, task: PoolTask) -> bool:
        """Its result is in, or it is overdue (its result() then reports the timeout)."""
        return task.future.done() or self.workers.overdue(task)

    def _fail(self, job: PredictionJob, exc: BaseException, state: _JobState | None = None) -> None:
        if state is not None:
            if state.failed:
                return
            state.failed = True
        if isinstance(exc, StageError):
            failure = CaseFailure(job.name, exc.file or str(job.source), exc.reason)
        elif isinstance(exc, InputFileError):
            failure = CaseFailure(job.name, str(exc.path), exc.reason)
        else:
            failure = CaseFailure(job.name, str(job.source), exception_text(exc))
        logger.debug("%s failed", job.name, exc_info=exc)
        logger.warning("%s failed: %s: %s", job.name, failure.file, failure.reason)
        self.report.failures.append(failure)
        self.bar.update()


__all__ = ["BatchScheduler", "PENDING_EXPORTS_PER_WORKER"]
