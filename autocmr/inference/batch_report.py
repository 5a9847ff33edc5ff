"""What a batch prediction did (:class:`BatchReport`) and its two records in the output folder.

``predictions.json`` lists every case predicted (its sources, output, seconds per stage, input warnings,
per-frame uncertainty and, for a cine on the fast path, ED/ES and the full-accuracy frames); ``failures.json``
lists the cases that failed with the file at fault and why. With ``--num-parts`` each part writes its own
(``predictions_partK.json``; :mod:`autocmr.inference.parts` merges them).

While a batch runs, each finished case is appended as one line to a hidden journal beside it
(``.predictions.progress.jsonl``), so a killed job keeps its records at a constant cost per case (rewriting
the whole ``predictions.json`` after every case would cost O(N²) on a cohort of 100,000 studies); the next
write of ``predictions.json`` (end of the batch, an interruption, or ``--continue``) merges the journal in
and removes it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from autocmr.documents import layout
from autocmr.errors import ConfigurationError
from autocmr.inference.batch_settings import setting_differences
from autocmr.inference.inputs import CaseFailure, PredictionJob
from autocmr.inference.parts import part_file_name
from autocmr.io.atomic import write_json_atomic
from autocmr.io.locks import held, is_held

logger = logging.getLogger(__name__)

_PREDICTIONS_STEM = Path(layout.BATCH_PREDICTIONS).stem
_SPLIT_LOCK = re.compile(rf"\.{re.escape(_PREDICTIONS_STEM)}\.split(?P<n>\d+)\.lock")


@dataclass
class BatchReport:
    """What :func:`~autocmr.inference.batch.predict_folder` did. ``timings`` maps a case name to seconds per
    stage."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # per case: bad input handled (autocmr.io.validity)
    uncertainty: dict[str, list[float]] = field(default_factory=dict)  # per frame; see Prediction.uncertainty
    cine: dict[str, dict[str, Any]] = field(default_factory=dict)  # fast cine path: ED/ES, full-accuracy frames
    blank_frames: dict[str, list[int]] = field(default_factory=dict)  # a cine's frames without image content
    # per case, its input files' stamp taken before they were read (see sources_stamp): a file replaced while
    # its case ran then differs from the record's stamp, and --continue predicts it again
    stamps: dict[str, str | None] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [f"{len(self.done)} predicted, {len(self.skipped)} skipped (output exists), "
                 f"{len(self.failures)} failed in {self.wall_s:.1f} s; masks in {self.output_dir}"]
        lines += [f"  FAILED {f.name}: {f.file}: {f.reason}" for f in self.failures]
        return "\n".join(lines)


def report_names(num_parts: int, part_id: int) -> tuple[str, str]:
    """File names of this part's failures and predictions records."""
    return (part_file_name(layout.BATCH_FAILURES, num_parts, part_id),
            part_file_name(layout.BATCH_PREDICTIONS, num_parts, part_id))


def progress_path(output_dir: Path, part: tuple[int, int]) -> Path:
    """The journal of finished cases beside this part's ``predictions.json``."""
    return Path(output_dir) / f".{Path(report_names(*part)[1]).stem}.progress.jsonl"


def case_record(report: BatchReport, job: PredictionJob) -> dict[str, Any]:
    """What ``predictions.json`` says about one predicted case."""
    name = job.name
    stamp = report.stamps[name] if name in report.stamps else sources_stamp(job)
    record = {"kind": job.kind, "sources": [str(s) for s in job.sources], "output": str(job.output),
              **({"sources_stamp": stamp} if stamp else {}),
              "seconds": {k: round(v, 3) for k, v in report.timings[name].items()},
              "warnings": report.warnings.get(name, []),
              "uncertainty": [u if u == u else None for u in report.uncertainty.get(name, [])]}  # NaN: null
    if name in report.cine:
        record["cine"] = report.cine[name]
    if report.blank_frames.get(name):
        record["blank_frames"] = report.blank_frames[name]  # never ED or ES, in the analysis either
    return record


def sources_stamp(job: PredictionJob) -> str | None:
    """A short digest of the job's input files as they are now: each one's path within the job's folder, size
    and modification time (whole seconds: some file systems keep no finer). ``--continue`` compares it with
    the record's, so a case of the same name from another input folder, or a study re-exported in place, is
    predicted again; paths within the folder, so one input mounted elsewhere (another node) still matches.
    The other phase's files count too where the model reads them (``partner_sources``): a re-exported ES
    changes the ED prediction. None when a file cannot be read now."""
    files = [(p, "") for p in job.sources] + [(p, "other phase: ") for p in job.partner_sources]
    folder = os.path.commonpath([str(p.parent) for p, _ in files])
    try:
        items = sorted((role + Path(os.path.relpath(p, folder)).as_posix(), (st := p.stat()).st_size,
                        int(st.st_mtime)) for p, role in files)
    except OSError:
        return None
    return hashlib.sha256(json.dumps(items).encode("utf-8")).hexdigest()[:16]


def same_sources(record: Any, job: PredictionJob) -> bool:
    """Whether a case record (of ``predictions.json``) was made from the job's input files as they are now; a
    record written before autocmr stamped its sources counts as the same, as it did then (by name)."""
    stamp = record.get("sources_stamp") if isinstance(record, dict) else None
    return not stamp or stamp == sources_stamp(job)


@contextlib.contextmanager
def holding_part(output_dir: Path, part: tuple[int, int]) -> Iterator[None]:
    """Hold this part of ``output_dir`` for the calling process (:mod:`autocmr.io.locks`): a second process on
    the same part (the same command started twice, a requeued array task racing the original) is refused at
    once, naming the holder, instead of predicting every case twice and interleaving the records. So is a run
    split otherwise than one running there (a plain run beside a ``--num-parts`` run, two ``--devices``
    counts): the two would predict the same cases at once, each into its own records. Only the parts of one
    split run side by side."""
    out = Path(output_dir)
    which = "this folder" if part[0] == 1 else f"part {part[1]} of {part[0]} in this folder"
    with held(out / f".{Path(report_names(*part)[1]).stem}.lock",
              lambda holder: ConfigurationError(f"{output_dir}: {which} is being predicted by {holder}; wait for "
                                                "it to end, or predict into another folder")):
        # every run holds its split's lock shared, then looks for a holder of another split's: of two runs
        # started together, the later to look sees the other (both may refuse; neither goes on unseen)
        with held(_split_lock(out, part[0]), lambda holder: ConfigurationError(holder), shared=True):
            for lock in sorted(out.glob(f".{_PREDICTIONS_STEM}.split*.lock")):
                other = _SPLIT_LOCK.fullmatch(lock.name)
                if other and int(other["n"]) != part[0] and is_held(lock):
                    raise ConfigurationError(
                        f"{output_dir}: another run ({_split(int(other['n']))}) is predicting into this folder now "
                        f"and this one is {_split(part[0])} (--num-parts, --devices): the two would predict the "
                        "same cases at once. Wait for it to end (then --continue), or predict into another folder")
            yield


def _split_lock(output_dir: Path, num_parts: int) -> Path:
    """Held (shared) by every part of a run split into ``num_parts`` while it predicts into ``output_dir``."""
    return output_dir / f".{_PREDICTIONS_STEM}.split{num_parts}.lock"


def _split(num_parts: int) -> str:
    return "not split" if num_parts == 1 else f"split into {num_parts} parts"


def open_journal(output_dir: Path, part: tuple[int, int], predictor_description: dict[str, Any]) -> None:
    """Start this part's journal with the settings of the run that appends to it (its first line), so that a
    batch killed before it wrote any ``predictions.json`` still says how its cases were made. A journal that
    an earlier run with other settings left (a plain rerun, not ``--continue``) is dropped first, as the
    record of such a run is (:func:`write_reports`): its masks stay, its records no longer list them."""
    path = progress_path(output_dir, part)
    header = journal_predictor(path)
    if path.is_file() and header is not None and setting_differences(header, predictor_description):
        cases = _journal(path)
        logger.warning("%s: %d case(s) journalled by an earlier run with other settings are no longer listed (their "
                       "files are left as they are)", path, len(cases))
        path.unlink()
    if not path.is_file():
        _append_line(path, json.dumps({"predictor": predictor_description}))


def append_progress(report: BatchReport, job: PredictionJob, part: tuple[int, int]) -> None:
    """Append one finished case to the journal (one JSON line, flushed to the file)."""
    _append_line(progress_path(report.output_dir, part),
                 json.dumps({"name": job.name, "record": case_record(report, job)}))


def _append_line(path: Path, line: str) -> None:
    with open(path, "a+b") as f:
        f.seek(0, 2)
        if f.tell():  # a line a killed job left without its newline would swallow this one
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode("utf-8") + b"\n")
        f.flush()


def _journal_entries(path: Path) -> list[dict[str, Any]]:
    """The journal's readable lines; a line a killed job left half-written is skipped."""
    entries = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def _journal(path: Path) -> dict[str, Any]:
    """Cases of a journal (its header line, the settings, is not a case)."""
    return {str(e["name"]): e["record"] for e in _journal_entries(path) if "name" in e and "record" in e}


def journal_predictor(path: Path) -> dict[str, Any] | None:
    """The settings a journal was started with (None for a journal without a header)."""
    for entry in _journal_entries(path):
        if isinstance(entry.get("predictor"), dict):
            return entry["predictor"]
    return None


def _record(path: Path) -> dict[str, Any]:
    """A predictions record; empty when it is missing or unreadable."""
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, OSError):
        return {}
    return record if isinstance(record, dict) else {}


def _recorded_in(path: Path) -> dict[str, Any]:
    cases = _record(path).get("cases", {})
    return cases if isinstance(cases, dict) else {}


def _predictor_in(path: Path) -> dict[str, Any] | None:
    predictor = _record(path).get("predictor")
    return predictor if isinstance(predictor, dict) else None


def recorded_cases(output_dir: Path) -> dict[str, Any]:
    """Every case record in ``output_dir``: ``predictions.json``, each part's ``predictions_partK.json`` and
    every journal, whichever split (or none) wrote them; where several hold a case, the most recently written
    file's record counts (an earlier merge's ``predictions.json`` or another split's part must not override
    what a later part recorded). ``--continue`` skips only cases recorded here: a mask on disk without its
    record (a job killed between writing it and recording it) is predicted again."""
    out = Path(output_dir)
    stem = Path(layout.BATCH_PREDICTIONS).stem
    files = sorted(out.glob(f"{stem}_part*.json")) + [out / layout.BATCH_PREDICTIONS]
    journals = sorted(out.glob(f".{stem}*.progress.jsonl"))
    cases: dict[str, Any] = {}
    for _, _, path in sorted((_written_at(p), i, p) for i, p in enumerate(files + journals)):
        cases.update(_journal(path) if path in journals else _recorded_in(path))
    return cases


def _written_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # none (yet): nothing to read
        return float("-inf")


def stored_predictors(output_dir: Path) -> dict[str, dict[str, Any]]:
    """File name -> its ``predictor`` settings, for every predictions record and journal in ``output_dir``."""
    out = Path(output_dir)
    stem = Path(layout.BATCH_PREDICTIONS).stem
    found = {}
    for path in sorted(out.glob(f"{stem}_part*.json")) + [out / layout.BATCH_PREDICTIONS]:
        predictor = _predictor_in(path)
        if predictor is not None:
            found[path.name] = predictor
    for journal in sorted(out.glob(f".{stem}*.progress.jsonl")):
        predictor = journal_predictor(journal)
        if predictor is not None:
            found[journal.name] = predictor
    return found


def write_reports(report: BatchReport, predictor_description: dict[str, Any], input_path: str | Path,
                  jobs: Sequence[PredictionJob], part: tuple[int, int], *, complete: bool = True,
                  split: dict[str, Any] | None = None) -> None:
    """Write ``failures.json`` and ``predictions.json`` (this part's names), keeping the cases an earlier run
    of a continued batch recorded (in ``predictions.json`` or its journal; for the cases this run skipped, in
    the records of any split), then remove the journal. A case that failed now has no record: its old one
    described another run's mask."""
    path = report.output_dir / report_names(*part)[1]
    journal = progress_path(report.output_dir, part)
    record = _record(path)  # what an earlier run (continued now) recorded about the cases it predicted
    cases = record.get("cases") if isinstance(record.get("cases"), dict) else {}
    earlier = record.get("predictor")
    if cases and isinstance(earlier, dict) and setting_differences(earlier, predictor_description):
        old = sorted(set(cases) - set(report.done))
        if old:  # their masks stay on disk, but this record describes this run's settings: not theirs
            logger.warning("%s: %d case(s) recorded by an earlier run with other settings are no longer listed "
                           "(their files are left as they are), e.g. %s", path, len(old), old[0])
        cases = {}
    cases.update(_journal(journal))
    if part[0] > 1 or record.get("num_parts", 1) != part[0]:
        # this file may be another split's part K (or a merge of all parts): the cases dealt to other parts
        # now are theirs to record, and an outdated copy here would win or lose the merge by part order
        mine = {j.name for j in jobs}
        cases = {name: case for name, case in cases.items() if name in mine}
    if report.skipped:
        earlier = recorded_cases(report.output_dir)
        cases.update({name: earlier[name] for name in report.skipped if name in earlier})
    by_name = {j.name: j for j in jobs}
    for name in report.done:
        cases[name] = case_record(report, by_name[name])
    kept = set(report.done) | set(report.skipped)  # an input problem may share a kept job's name (a clash)
    for failure in report.failures:
        if failure.name not in kept:
            cases.pop(failure.name, None)
    accounted = set(report.done) | set(report.skipped) | {f.name for f in report.failures}
    not_attempted = [] if complete else sorted(j.name for j in jobs if j.name not in accounted)
    write_batch_record(report, predictor_description, input_path, cases, part, complete=complete,
                       not_attempted=not_attempted, split=split)
    journal.unlink(missing_ok=True)  # merged: predictions.json now holds every record


def write_batch_record(report: BatchReport, predictor_description: dict[str, Any], input_path: str | Path,
                       cases: dict[str, Any], part: tuple[int, int] = (1, 0), *, complete: bool = True,
                       not_attempted: Sequence[str] = (), split: dict[str, Any] | None = None) -> None:
    """``failures.json`` and ``predictions.json`` (this part's names) of a batch whose case records are
    ``cases``: the one layout the analysis, ``--continue`` and ``autocmr_merge_parts`` read. ``complete``
    is False for a batch stopped before it finished (``not_attempted``: its cases never started), which
    ``autocmr_merge_parts`` does not merge unless told to; ``split``: the input listing the parts were dealt
    from (:func:`autocmr.inference.batch_settings.input_listing`) and when this part started."""
    failures_name, predictions_name = report_names(*part)
    write_json_atomic(report.output_dir / failures_name, [f.to_dict() for f in report.failures])
    write_json_atomic(report.output_dir / predictions_name, {
        "predictor": predictor_description, "input": str(input_path), "num_parts": part[0], "part_id": part[1],
        **({"split": split} if split else {}), "complete": complete,
        **({"not_attempted": list(not_attempted)} if not complete else {}),
        "wall_s": round(report.wall_s, 3), "done": report.done, "skipped": report.skipped,
        "failed": [f.name for f in report.failures], "cases": dict(sorted(cases.items()))})


__all__ = ["BatchReport", "append_progress", "case_record", "holding_part", "journal_predictor", "open_journal",
           "progress_path", "recorded_cases", "report_names", "same_sources", "sources_stamp", "stored_predictors",
           "write_batch_record", "write_reports"]
