"""Predict every image of a folder (NIfTI 3D, 4D cine, DICOM series) with one model: ``autocmr_predict``.

Worker processes read and preprocess the next cases and export finished predictions while this process runs
the network (:mod:`autocmr.inference.batch_scheduler`, stages in :mod:`autocmr.inference.batch_stages`). Frames
of a 4D cine are predicted and exported one by one and joined into one 4D mask with the input's exact header; by
default a cine takes the fast path instead (:mod:`autocmr.inference.fast_cine`: a cheap pass over every frame,
full accuracy on ED and ES). DICOM inputs can also get DICOM-SEG objects (:mod:`autocmr.io.dicom_seg`).

Every file is written atomically (temporary name, then rename): an interrupted run leaves no half-written
mask, and ``continue_=True`` picks up where it stopped. A case that fails (unreadable file, wrong channels,
NaN values, a crashed worker) is recorded with its file and reason and the batch goes on; ``failures.json``
and ``predictions.json`` are written into the output folder at the end
(:mod:`autocmr.inference.batch_report`). What comes after, such as the clinical analysis of the masks
(:func:`autocmr.analysis.pipeline.analyse_batch`), is the caller's ``after_batch`` hook: inference knows
nothing of it.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from autocmr.errors import ConfigurationError, InputFileError
from autocmr.inference.batch_report import (BatchReport, append_progress, holding_part, open_journal,
                                             recorded_cases, report_names, same_sources, sources_stamp,
                                             stored_predictors, write_reports)
from autocmr.inference.batch_scheduler import BatchScheduler
from autocmr.inference.batch_settings import input_listing, setting_differences
from autocmr.inference.batch_stages import writes_nifti, writes_seg
from autocmr.inference.fast_cine import CineOptions
from autocmr.inference.inputs import (IMAGES_FROM_DICOM, CaseFailure, PredictionJob, check_input_exists, discover_jobs,
                                     with_phase_partners)
from autocmr.inference.parts import subject_key, take_part
from autocmr.inference.predictor import Predictor, PredictorOptions
from autocmr.io.atomic import SHARED_FOLDER_STALE_S, check_output_folder, temporary_target
from autocmr.io.dicom_seg import OUTPUT_FORMATS, seg_output_exists
from autocmr.models.folder import ModelSpec
from autocmr.parallel import ResilientPool, default_workers

logger = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 3  # reading/exporting rarely needs more to keep one network busy (nnU-Net uses 3 + 3)


class AfterBatch(Protocol):
    """What runs once a batch's masks and records are written, e.g. the clinical analysis of the masks
    (``functools.partial(autocmr.analysis.pipeline.analyse_batch, metadata=...)``). It gets the report, every
    job of this part (predicted, skipped because its output exists, or failed), the input and the part
    ``(num_parts, part_id)``. It must be picklable to cross to a device's process (``--devices``)."""

    def __call__(self, report: BatchReport, jobs: Sequence[PredictionJob], input_path: str | Path, *,
                 part: tuple[int, int]) -> Any: ...


def predict_folder(input_path: str | Path, output_dir: str | Path, model: Predictor | str | Path | ModelSpec, *,
                   options: PredictorOptions | None = None, continue_: bool = False, num_parts: int = 1,
                   part_id: int = 0, save_probabilities: bool = False, num_workers: int | None = None,
                   cine: CineOptions | None = None, output_format: str = "nifti",
                   after_batch: AfterBatch | None = None,
                   subject_of: Callable[[str], str] = subject_key,
                   phase_pairs: Callable[[Sequence[PredictionJob]], Mapping[str, str]] | None = None,
                   check_settings: bool = True, worker_timeout_s: float | None = None) -> BatchReport:
    """Segment every image in ``input_path`` (a folder or one file) into ``output_dir``.

    Args:
        input_path: images (see :mod:`autocmr.inference.inputs` for what is recognised).
        output_dir: receives ``NAME.nii.gz`` masks (uint8, the input's exact geometry), optional
            ``NAME_probabilities.npz``, ``images_from_dicom/``, ``failures.json`` and ``predictions.json``.
        model: a :class:`Predictor`, a model folder, or a :class:`ModelSpec`.
        options: how to build the predictor when ``model`` is not one already.
        continue_: skip cases whose mask (and probabilities, if requested) already exist and are recorded from
            the same input files (a mask without its record, written just before a job was killed, or one
            recorded from files of another size or time, is predicted again).
        num_parts, part_id: run only every ``num_parts``-th subject of the sorted list, starting at
            ``part_id`` (several machines share a folder); reports are then named ``failures_partK.json`` etc.
        subject_of: a case name's subject (default :func:`~autocmr.inference.parts.subject_key` by name; the
            CLI adds the ``cases.csv`` rows): with ``num_parts``, one subject's cases go to one part.
        save_probabilities: also write float16 class probabilities, (C, ...) or (t, C, ...) for a cine.
        num_workers: processes for reading and exporting; 0 runs everything here; None picks a few.
        cine: how 4D cines are predicted (default: the fast path of :mod:`autocmr.inference.fast_cine`).
        output_format: "nifti", "dicom-seg" or "both"; DICOM-SEG (:mod:`autocmr.io.dicom_seg`) is written
            for DICOM inputs only, other inputs always get NIfTI masks (with a warning).
        after_batch: run once the records are written (see :class:`AfterBatch`); ``autocmr_predict`` passes
            the analysis that writes measures, volume curves, QC, figures and ``report.html``.
        phase_pairs: for a model that takes the other cardiac phase as input (plans ``other_phase``): the ED <->
            ES pairs (job name -> job name) among the 3D jobs; ``autocmr_predict`` passes the analysis' subject
            grouping (:func:`autocmr.analysis.subjects.phase_pairs_of_jobs`). Unpaired volumes, and every
            volume without it, see themselves in the other phase's place.
        check_settings: with ``continue_``, refuse an ``output_dir`` whose records were written with another
            model or other settings (off only for a caller that rewrites the record in its own form, as a
            one-member selection does).
        worker_timeout_s: a case whose reading, export or writing in a worker process gives no result this
            long after it was handed over fails (the worker is stopped) and the batch goes on; None: no limit.
            Needs worker processes (``num_workers`` > 0).

    Raises:
        AutocmrError: the model cannot be loaded, the input does not exist or holds no image, bad options.
    """
    start = time.perf_counter()
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ConfigurationError(f"part_id must be in [0, num_parts) with num_parts >= 1, got part {part_id} of "
                                 f"{num_parts}")
    if output_format not in OUTPUT_FORMATS:
        raise ConfigurationError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    out = check_output_folder(output_dir)  # before the model loads: a wrong -o fails at once
    check_input_exists(input_path)  # so does a wrong -i
    predictor = _make_predictor(model, options or PredictorOptions())
    discovery = discover_jobs(input_path, out, num_channels=predictor.model.plans_channels())
    if not discovery.jobs and not discovery.problems:
        raise InputFileError(input_path, "no images found (NIfTI/MHA/NRRD files or DICOM series)")
    if not discovery.jobs and Path(input_path).expanduser().is_file():  # the one file asked for cannot be a case:
        raise InputFileError(input_path, discovery.problems[0].reason)  # a wrong -i, not a batch with a failure
    _warn_non_dicom(discovery.jobs, output_format)
    out.mkdir(parents=True, exist_ok=True)
    jobs = discovery.jobs
    if phase_pairs is not None and predictor.config.other_phase:  # over every job: a partner may be in another part
        jobs = with_phase_partners(jobs, dict(phase_pairs(jobs)))
    # what the parts are dealt over (the jobs' names and subjects), so parts that saw other inputs are told apart
    split = {**input_listing([(j.name, subject_of(j.name)) for j in jobs], [p.name for p in discovery.problems]),
             "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    jobs = take_part(jobs, num_parts, part_id, lambda job: subject_of(job.name))
    # one process at a time per part: a requeued array task racing the original would double every record
    with holding_part(out, (num_parts, part_id)):
        report = BatchReport(out, failures=list(discovery.problems) if part_id == 0 else [])
        cine = cine or CineOptions()
        description = {**predictor.describe(), "cine": cine.describe()}  # how 4D cines were predicted, too
        if continue_ and check_settings:
            _check_same_settings(out, description)
        open_journal(out, (num_parts, part_id), description)
        recorded = recorded_cases(out) if continue_ else {}
        finished = [j for j in jobs if continue_ and _finished(j, save_probabilities, output_format)]
        report.skipped = [j.name for j in finished if j.name in recorded and same_sources(recorded[j.name], j)]
        skipped = set(report.skipped)
        unrecorded = [j.name for j in finished if j.name not in recorded]
        if unrecorded:
            logger.info("%d case(s) have outputs but no record (a run stopped between the two): predicted again, "
                        "e.g. %s", len(unrecorded), unrecorded[0])
        changed = [j.name for j in finished if j.name in recorded and j.name not in skipped]
        if changed:  # same name, other files: another input folder, or a study exported again in place
            logger.info("%d case(s) were recorded from other input files than these (another input folder, or "
                        "files replaced since; their size or time differs): predicted again, e.g. %s", len(changed),
                        changed[0])
        todo = [j for j in jobs if j.name not in skipped]
        foreign = {j.name: _foreign_output(j) for j in todo if j.output.is_file() and j.name not in recorded}
        foreign = {name: failure for name, failure in foreign.items() if failure is not None}
        if foreign:  # an image of that name the user keeps there: never overwritten by a mask
            report.failures += list(foreign.values())
            todo = [j for j in todo if j.name not in foreign]
        report.stamps = {j.name: sources_stamp(j) for j in todo}  # before any is read: see BatchReport.stamps
        _remove_stale_temporaries(out, todo, report_names(num_parts, part_id))
        count = _auto_workers(len(todo)) if num_workers is None else max(0, num_workers)
        if num_workers is None and worker_timeout_s is not None:  # a time limit needs a process to stop
            count = max(1, count)
        workers = ResilientPool(count, task_timeout_s=worker_timeout_s)
        if worker_timeout_s is not None and workers.num_workers == 0 and todo:
            logger.warning("--worker-timeout needs worker processes; with -j 0 (or a single case) cases run here, "
                           "without a time limit")
        logger.info("%d case(s) to predict (%d skipped, %d input problem(s)) with %d worker process(es)",
                    len(todo), len(report.skipped), len(report.failures), workers.num_workers)

        def record_progress(job: PredictionJob) -> None:  # after every case, at a constant cost: a job killed
            append_progress(report, job, (num_parts, part_id))  # now keeps the records --continue then merges

        scheduler = BatchScheduler(predictor, workers, save_probabilities, report, cine=cine,
                                   output_format=output_format, on_case_done=record_progress)
        complete = False
        try:
            scheduler.run(todo)
            complete = True
        finally:  # interrupted too: the cases finished so far are recorded
            try:
                workers.close()
                scheduler.close()
            finally:  # a stop signal arriving while the workers finish must not cost the records either
                report.wall_s = time.perf_counter() - start
                report.done.sort()
                report.failures.sort(key=lambda f: (f.name, f.file))
                write_reports(report, description, input_path, jobs, (num_parts, part_id), complete=complete,
                              split=split)
        if after_batch is not None:
            after_batch(report, jobs, input_path, part=(num_parts, part_id))
    # autocmr_predict prints the summary on stdout; logged at info level as well, a terminal showed it twice
    logger.debug("%s", report.summary().splitlines()[0])
    return report


def _foreign_output(job: PredictionJob) -> CaseFailure | None:
    """A failure for ``job`` when a file at its mask's path is no mask autocmr could have written (masks are
    uint8 label maps): an image a user keeps in the output folder under that name, which a prediction would
    replace. None for a mask (an earlier run's, kept or not recorded)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(job.output))
    try:
        reader.ReadImageInformation()
        mask = reader.GetPixelID() == sitk.sitkUInt8
        kind = f"{sitk.GetPixelIDValueAsString(reader.GetPixelID())} voxels"
    except RuntimeError:
        kind, mask = "not readable as an image", False
    if mask:
        return None
    return CaseFailure(job.name, str(job.output), f"the output folder holds a file of this name that is no autocmr "
                                                  f"mask ({kind}): predicting would replace it; predict into "
                                                  "another folder, or move that file")


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
    wants_seg, wants_nifti = writes_seg(job, output_format), writes_nifti(job, output_format)
    return ((not wants_nifti or job.output.is_file()) and (not wants_seg or seg_output_exists(job.output))
            and (not save_probabilities or job.probabilities_path.is_file()))


def _warn_non_dicom(jobs: Sequence[PredictionJob], output_format: str) -> None:
    others = [j.name for j in jobs if j.kind != "dicom"]
    if output_format != "nifti" and others:
        logger.warning("--output-format %s: DICOM-SEG needs a DICOM source series; %d input(s) that are not DICOM "
                       "(e.g. %s) get NIfTI masks", output_format, len(others), others[0])
    enhanced = [j.name for j in jobs if j.kind == "dicom" and j.multiframe]
    if output_format != "nifti" and enhanced:
        logger.warning("--output-format %s: DICOM-SEG on enhanced multi-frame DICOM is not written yet; %d series "
                       "(e.g. %s) get NIfTI masks", output_format, len(enhanced), enhanced[0])


def _check_same_settings(out: Path, description: dict[str, Any]) -> None:
    """``--continue`` adds to the cases an earlier run predicted: refuse when that run used another model or
    other settings, which would leave one folder of masks made two ways under one record. Other parts'
    records (a cluster run) are held to the same rule (:mod:`autocmr.inference.batch_settings`)."""
    for name, stored in stored_predictors(out).items():
        differences = setting_differences(stored, description)
        if differences:
            hint = (" (--precision auto chose differently on this machine: give --precision explicitly)"
                    if any(d.startswith("precision:") for d in differences) else "")
            raise ConfigurationError(f"{out / name}: its cases were predicted with other settings "
                                     f"({'; '.join(differences)}){hint}; --continue would mix the two in one "
                                     "folder. Predict into another folder, or run without --continue to predict "
                                     "every case again")


def _remove_stale_temporaries(out: Path, jobs: Sequence[PredictionJob], names: Sequence[str],
                              older_than_s: float = SHARED_FOLDER_STALE_S) -> None:
    """Delete temporaries an interrupted run left for *these* outputs (other parts may be writing now), and
    only those not written to for ``older_than_s``: another run into this folder that the locks did not keep
    out (a file system without them) may be writing one now. A younger leftover is removed by a later run."""
    targets = set(names) | {p.name for j in jobs for p in (j.output, j.probabilities_path, j.image_copy) if p}
    now = time.time()
    for folder in (out, out / IMAGES_FROM_DICOM):
        if folder.is_dir():
            for item in folder.iterdir():
                if temporary_target(item.name) not in targets:
                    continue
                try:
                    if now - item.stat().st_mtime >= older_than_s:
                        item.unlink()
                except FileNotFoundError:  # its writer renamed or removed it meanwhile
                    continue


__all__ = ["AfterBatch", "BatchReport", "ModelSpec", "PredictorOptions", "predict_folder"]
