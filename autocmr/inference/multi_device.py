"""Inference on several GPUs of one machine: one worker process per device, each predicting its part.

``autocmr_predict ... --devices cuda:0 cuda:1 cuda:2 cuda:3`` splits this run's cases into one part per
device exactly as ``--num-parts`` does between machines (the same output folder, the same ``_partK`` tables),
then merges the tables (:func:`autocmr.inference.parts.merge_parts`). One device alone is one part, the whole
run: its process writes the plain tables and there is nothing to merge. Combined with ``--num-parts P
--part-id K`` on a cluster, device ``d`` of part ``K`` becomes part ``K * D + d`` of ``P * D``, and the tables
are merged once, after all machines finished, by ``autocmr_merge_parts``.

When every device's process refuses its part (exit status 2: a bad model or option, an unusable device), the
run is refused as one run on one device would be (:class:`~autocmr.errors.ConfigurationError`; exit status 2).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Sequence

from autocmr.device import ChildSettings
from autocmr.errors import AutocmrError, ConfigurationError
from autocmr.inference.parts import MergeReport, merge_parts
from autocmr.inference.predictor import PredictorOptions
from autocmr.models.folder import ModelSpec
from autocmr.parallel import default_workers
from autocmr.parent_watch import finishing_on_sigterm

logger = logging.getLogger(__name__)

REFUSED = 2  # a device process's exit status for autocmr's own errors (bad options or model), as autocmr_predict's


@dataclass
class DevicesReport:
    """What each device's part did, and the merged tables when this run was the whole job."""

    output_dir: Path
    parts: dict[str, str] = field(default_factory=dict)  # device -> its part's summary line
    failed_devices: dict[str, str] = field(default_factory=dict)  # device -> why its process failed
    exit_codes: dict[str, int | None] = field(default_factory=dict)  # device -> its failed process's exit code
    failed_cases: int = 0
    merge: MergeReport | None = None

    @property
    def ok(self) -> bool:
        return not self.failed_devices and not self.failed_cases

    def summary(self) -> str:
        lines = [f"{device}: {line}" for device, line in self.parts.items()]
        lines += [f"{device}: FAILED: {why}" for device, why in self.failed_devices.items()]
        if self.merge is not None:
            lines.append(self.merge.summary())
        return "\n".join(lines)


def predict_on_devices(input_path: str | Path, output_dir: str | Path, model: str | Path | ModelSpec,
                       devices: Sequence[str], *, options: PredictorOptions | None = None, num_parts: int = 1,
                       part_id: int = 0, keep_freed_memory: bool = False, **batch_options: Any) -> DevicesReport:
    """Predict ``input_path`` with one process per device (see the module doc); ``batch_options`` go to
    :func:`autocmr.inference.batch.predict_folder` (``continue_``, ``save_probabilities``, ...).
    ``keep_freed_memory``: CPU children apply :func:`autocmr.allocator.keep_freed_memory`, as
    ``autocmr_predict`` does for itself; off for Python callers unless they ask (a process-wide setting)."""
    if not devices:
        raise ConfigurationError("--devices needs at least one device, e.g. cuda:0 cuda:1")
    if not isinstance(model, (str, Path, ModelSpec)):
        raise ConfigurationError("predicting on several devices needs a model folder or ModelSpec, not a loaded "
                                 "Predictor (each device's process loads its own)")
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ConfigurationError(f"part_id must be in [0, num_parts), got part {part_id} of {num_parts}")
    options = options or PredictorOptions()
    _check_up_front(input_path, output_dir, devices, options)
    total = num_parts * len(devices)
    threads = max(1, default_workers() // len(devices))
    mp = multiprocessing.get_context("spawn")
    running: dict[int, tuple[str, Any, Connection]] = {}
    for index, device in enumerate(devices):
        reader, writer = mp.Pipe(duplex=False)
        part = part_id * len(devices) + index
        process = mp.Process(target=_device_main, name=f"autocmr-predict-{device}",
                             args=(str(input_path), str(output_dir), model, replace(options, device=device), total,
                                   part, ChildSettings(threads, keep_freed_memory, parent_pid=os.getpid()),
                                   batch_options, writer))
        process.start()
        writer.close()
        running[process.sentinel] = (device, process, reader)
    report = DevicesReport(Path(output_dir).expanduser())
    try:
        _collect(running, report)
    finally:  # an error here (or Ctrl-C) must not leave the other devices' processes running unattended
        for _, process, _ in running.values():
            process.join(timeout=30)  # Ctrl-C reached them too: let them record what they finished
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
    if report.failed_devices and not report.parts and set(report.exit_codes.values()) == {REFUSED}:
        raise ConfigurationError(f"{'every device' if len(devices) > 1 else devices[0]}: refused to predict (the "
                                 "reason is printed above: bad options or model, an unusable device, a folder in use)")
    if num_parts == 1 and len(devices) > 1 and not report.failed_devices:
        report.merge = merge_parts(output_dir)
    elif num_parts > 1:
        logger.info("this machine's %d parts are done; merge all %d parts with `autocmr_merge_parts %s` once every "
                    "machine has finished", len(devices), total, output_dir)
    return report


def _collect(running: dict[int, tuple[str, Any, Connection]], report: DevicesReport) -> None:
    messages: dict[str, tuple[str, int]] = {}
    while running:
        for sentinel in wait(list(running)):
            device, process, reader = running.pop(sentinel)  # type: ignore[index]
            try:
                if reader.poll():
                    messages[device] = reader.recv()
            except (EOFError, OSError):  # the process ended without sending its report (an error in it)
                pass
            process.join()
            if device in messages:
                report.parts[device], failed = messages[device]
                report.failed_cases += failed
            else:
                report.failed_devices[device] = (f"its process ended with code {process.exitcode} before reporting "
                                                 "(its error is printed above)")
                report.exit_codes[device] = process.exitcode


def _check_up_front(input_path: str | Path, output_dir: str | Path, devices: Sequence[str],
                    options: PredictorOptions) -> None:
    """What every device's process would refuse, refused once here before any process starts: a device this
    machine does not have, a precision it cannot run, a missing input, an output folder that cannot be used."""
    from autocmr.device import resolve_device
    from autocmr.inference.inputs import check_input_exists
    from autocmr.io.atomic import check_output_folder
    from autocmr.precision import resolve_precision

    for device in devices:
        resolve_precision(options.precision, resolve_device(device), training=False)
    check_output_folder(output_dir)
    check_input_exists(input_path)


def _device_main(input_path: str, output_dir: str, model: str | Path | ModelSpec, options: PredictorOptions,
                 num_parts: int, part_id: int, settings: ChildSettings, batch_options: dict[str, Any],
                 pipe: Connection) -> None:
    """Entry point of one device's process: process-wide settings, then its part of the batch."""
    from autocmr.device import resolve_device
    from autocmr.inference.batch import predict_folder

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"[{options.device}] %(message)s")
    settings.apply(resolve_device(options.device))  # threads; the allocator setting when the CLI asked
    try:
        with finishing_on_sigterm("recording the cases finished so far"):  # the records survive a time limit
            report = predict_folder(input_path, output_dir, model, options=options, num_parts=num_parts,
                                    part_id=part_id, **batch_options)
    except AutocmrError as exc:  # a one-line reason, as autocmr_predict gives, not a child's traceback
        print(f"[{options.device}] error: {exc}", file=sys.stderr)
        raise SystemExit(REFUSED) from None
    pipe.send((report.summary().splitlines()[0], len(report.failures)))
