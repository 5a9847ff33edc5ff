"""Cluster inference in parts: the file-naming rule of a part's tables, and merging the parts' tables.

``autocmr_predict --num-parts N --part-id K`` (one array task, machine or GPU per part) predicts every N-th
subject (:func:`take_part`: a subject's ED and ES files stay together) into a shared output folder. Masks are
per case and never collide; each part's tables get the suffix ``_partK`` before the extension
(``failures_part2.json``, ``predictions_part2.json``, ``measures_part2.csv``, ...). :func:`merge_parts` then
writes the unsuffixed tables over all parts:

- ``failures_partK.json`` (lists): concatenated, sorted by case name.
- ``predictions_partK.json``: cases, done/skipped/failed lists joined; ``wall_s`` is the slowest part (parts run
  side by side); the parts must agree on how they predicted (every setting but the device, and the model
  folder's path where their records name the weights' sha256: :mod:`autocmr.inference.batch_settings`);
  model folder paths and devices may then differ and are listed.
- any other ``NAME_partK.csv``: rows concatenated in part order, columns joined; when every part's rows are
  sorted by the first column, so are the merged rows.
- any other ``NAME_partK.json``: lists concatenated, objects merged key by key (values that differ between
  parts become a list, one value per part).

A part that is missing, stopped before it finished (``"complete": false`` in its record: Ctrl-C, a
cluster's time limit), still has its journal of finished cases (running, or killed), or found another list
of inputs than the other parts (studies added between the array tasks' starts) is merged only with
``allow_incomplete``. The parts of an earlier split into another number of parts (a ``--continue`` rerun
with other ``--num-parts`` or ``--devices``) are left out with a warning: the new parts' records carry
their cases. A ``predictions.json`` written after the newest part's record by a run without parts (a plain
run, or ``--devices`` with one device) is not overwritten: the merge is refused.

The parts are kept, so merging again after a rerun of one part is safe. Other per-part files (an HTML
report, say) are left as they are.
"""
from __future__ import annotations

import heapq
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pandas as pd

from autocmr.documents import layout
from autocmr.errors import ConfigurationError, InputFileError
from autocmr.evaluation.clinical import ED, ES, FRAME_IN_ID, subject_and_phase
from autocmr.inference.batch_settings import setting_differences
from autocmr.io.atomic import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)
PART_FILE = re.compile(r"^(?P<stem>.+)_part(?P<part>\d+)(?P<ext>\.(?:csv|json))$")


def part_suffix(num_parts: int, part_id: int) -> str:
    """The suffix of every per-part output file: ``""`` for one part, ``"_partK"`` for part K of several."""
    return "" if num_parts == 1 else f"_part{part_id}"


def with_suffix(name: str, suffix: str) -> str:
    """``measures.csv`` + ``_part0`` -> ``measures_part0.csv`` (the suffix goes before the extension)."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}{suffix}.{ext}" if dot else f"{name}{suffix}"


def part_file_name(name: str, num_parts: int, part_id: int) -> str:
    """``predictions.json`` -> ``predictions_part2.json`` for part 2 of several; unchanged for one part."""
    return with_suffix(name, part_suffix(num_parts, part_id))


def subject_key(name: str, metadata: pd.DataFrame | None = None) -> str:
    """The subject a case belongs to, for keeping a subject's cases in one part: its ``cases.csv`` row's
    ``subject``, else the name rules of the analysis (``SUBJECT_ED``/``_ES``, ACDC ``SUBJECT_frameNN``), else
    the case name itself."""
    if metadata is not None and name in metadata.index and "subject" in metadata.columns:
        value = metadata.at[name, "subject"]
        if not pd.isna(value) and str(value).strip():
            return str(value).strip()
    subject, phase = subject_and_phase(name, None)
    if subject is not None and phase in (ED, ES):
        return subject
    match = FRAME_IN_ID.match(name)
    return match.group("subject") if match else name


T = TypeVar("T")


def take_part(items: Sequence[T], num_parts: int, part_id: int, key: Callable[[T], str]) -> list[T]:
    """Part ``part_id`` of ``num_parts`` of ``items`` (in their order), dealt by ``key``: items with the same
    key (the ED and ES files of one subject) fall in the same part, so that each part can pair and measure
    them; the keys, in order of first appearance, go round the parts in turn."""
    order = list(dict.fromkeys(key(item) for item in items))
    mine = set(order[part_id::num_parts])
    return [item for item in items if key(item) in mine]


@dataclass
class MergeReport:
    """What :func:`merge_parts` wrote: merged file -> the part files it came from, and the merged failures."""

    output_dir: Path
    num_parts: int
    present: int | None = None  # parts found (fewer than num_parts with allow_incomplete)
    merged: dict[str, list[str]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        parts = (f"{self.present} of {self.num_parts} parts" if self.present not in (None, self.num_parts)
                 else f"{self.num_parts} part(s)")
        lines = [f"merged {parts} in {self.output_dir}: {self.done} case(s) predicted, "
                 f"{len(self.failures)} failed; tables: {', '.join(sorted(self.merged))}"]
        lines += [f"  FAILED {f.get('name')}: {f.get('file')}: {f.get('reason')}" for f in self.failures]
        return "\n".join(lines)


def find_parts(output_dir: Path) -> dict[str, dict[int, Path]]:
    """Part files in ``output_dir``, by merged name (``measures.csv``) and part id."""
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in sorted(output_dir.iterdir()):
        if path.name.startswith("."):  # a part's temporary (.tmp_<hex>_measures_part1.csv) or journal
            continue
        match = PART_FILE.match(path.name)
        if match and path.is_file():
            groups[match["stem"] + match["ext"]][int(match["part"])] = path
    return dict(groups)


def merge_parts(output_dir: str | Path, *, allow_incomplete: bool = False) -> MergeReport:
    """Merge the per-part tables of a split prediction run in ``output_dir`` into one set (see module doc).

    Raises:
        ConfigurationError: no parts, parts of different splits (``num_parts``) or predicted differently,
            a later run without parts wrote ``predictions.json``, or parts missing (unless
            ``allow_incomplete``: then the parts present are merged, with a warning).
        InputFileError: a part file that cannot be read, naming it.
    """
    out = Path(output_dir).expanduser()
    if not out.is_dir():
        raise InputFileError(out, "output folder not found")
    groups = find_parts(out)
    predictions = groups.get(layout.BATCH_PREDICTIONS, {})
    if not predictions:
        raise ConfigurationError(f"{out}: no predictions_partK.json found; run autocmr_predict with --num-parts N "
                                 "--part-id K into this folder first")
    _refuse_a_later_unsplit_run(out, predictions)
    documents = {k: _read_json(p) for k, p in predictions.items()}
    num_parts, documents = _current_split(out, documents, predictions)
    _check_split(out, documents, num_parts, allow_incomplete)
    _check_tables_are_this_runs(out, groups, predictions, documents, allow_incomplete)
    report = MergeReport(out, num_parts, present=len(documents))
    for name, parts in sorted(groups.items()):
        ignored = sorted(k for k in parts if k not in documents)
        if ignored:  # another split's (or a part without a record: nothing says its table is this run's)
            logger.warning("%s: not merged (no %s of this %d-part run beside it)",
                           ", ".join(parts[k].name for k in ignored), layout.BATCH_PREDICTIONS, num_parts)
        ordered = [parts[k] for k in sorted(parts)
                   if k in documents and not (name.endswith(".csv") and _older(parts[k], predictions[k]))]
        if not ordered:
            continue
        if name == layout.BATCH_PREDICTIONS:
            merged: Any = _merge_predictions([documents[k] for k in sorted(documents)], ordered, num_parts)
            report.done = len(merged["done"])
        elif name == layout.BATCH_FAILURES:
            merged = sorted((f for p in ordered for f in _as_list(_read_json(p), p)),
                            key=lambda f: (str(f.get("name")), str(f.get("file"))))
            report.failures = merged
        elif name.endswith(".json"):
            merged = _merge_values([_read_json(p) for p in ordered])
        else:
            write_text_atomic(out / name, _merge_csv(ordered).to_csv(index=False))
            report.merged[name] = [p.name for p in ordered]
            continue
        write_json_atomic(out / name, merged)
        report.merged[name] = [p.name for p in ordered]
    _remove_stale_report(out, report)
    # autocmr_merge_parts prints the summary on stdout; logged at info level as well, a terminal showed it twice
    logger.debug("%s", report.summary().splitlines()[0])
    return report


def _remove_stale_report(out: Path, report: MergeReport) -> None:
    """A ``report.html`` beside the merged tables is an earlier unsplit run's (the parts write
    ``report_partK.html``): its numbers and subjects no longer match ``measures.csv``, so it goes, with a word
    on how to build one report for the merged folder."""
    stale = out / "report.html"
    if not report.merged or not stale.is_file():
        return
    stale.unlink()
    logger.warning("%s removed: an earlier run's report, which no longer matches the merged tables; the parts' "
                   "reports are report_partK.html, and autocmr.analysis.analyse_output_folder(%r) builds one "
                   "report for the whole folder", stale, str(out))


def _check_tables_are_this_runs(out: Path, groups: dict[str, dict[int, Path]], predictions: dict[int, Path],
                                documents: dict[int, Any], allow_incomplete: bool) -> None:
    """A part records its cases before its analysis writes the tables (``measures_partK.csv``...): a part
    whose analysis was cut short (a time limit, a crash) or not asked for (``--no-analysis``) has no table,
    or an earlier run's, older than its record. Merging those would give tables that miss that part's
    subjects, or show superseded numbers, under a record that says every case was predicted."""
    problems = []
    for name, parts in sorted(groups.items()):
        if not name.endswith(".csv"):
            continue
        missing = sorted(k for k in documents if k not in parts)
        stale = sorted(k for k in documents if k in parts and _older(parts[k], predictions[k]))
        if len(missing) + len(stale) == len(documents):  # no part of this run analysed: an earlier run's leftovers
            if stale:
                logger.warning("%s: the %s of part(s) %s are an earlier run's (this run's parts wrote none): not "
                               "merged", out, name, stale)
            continue
        if missing:
            problems.append(f"part(s) {missing} wrote no {name} (their analysis did not run or did not finish)")
        if stale:
            problems.append(f"the {name} of part(s) {stale} is older than the part's {layout.BATCH_PREDICTIONS} "
                            "(an earlier run's: this run's analysis did not finish)")
    _refuse_or_warn(out, problems, allow_incomplete,
                    "Rerun those parts with the same command and --continue (predicted cases are skipped; the "
                    "analysis runs again), or merge with --allow-incomplete: the tables then leave those parts out",
                    "merging anyway, without those parts' tables")


def _refuse_or_warn(out: Path, problems: Sequence[str], allow_incomplete: bool, remedy: str, anyway: str) -> None:
    """The merge's problems: refused with ``remedy``, or with ``--allow-incomplete`` each logged."""
    if problems and not allow_incomplete:
        raise ConfigurationError(f"{out}: {'; '.join(problems)}. {remedy}")
    for problem in problems:
        logger.warning("%s: %s: %s", out, anyway, problem)


def _older(table: Path, record: Path) -> bool:
    try:
        return table.stat().st_mtime < record.stat().st_mtime
    except OSError:
        return False


def _refuse_a_later_unsplit_run(out: Path, parts: dict[int, Path]) -> None:
    """A ``predictions.json`` newer than every part's record that no merge wrote is a later run without parts
    (plain, or on one device) into this folder: merging the older parts would overwrite its record."""
    plain = out / layout.BATCH_PREDICTIONS
    newest = max(parts.values(), key=lambda p: p.stat().st_mtime)
    try:
        if plain.stat().st_mtime <= newest.stat().st_mtime:
            return  # an earlier run's: the parts' records replace it
        document = json.loads(plain.read_text())  # read only then: a cohort's record runs to megabytes
    except (OSError, ValueError):
        return  # none, or unreadable: nothing to keep
    if isinstance(document, dict) and "merged_from" not in document:
        raise ConfigurationError(f"{plain}: written by a run without parts after the newest part's record "
                                 f"({newest.name}); merging the parts would overwrite it with older records. If that "
                                 "run replaces the parts, remove their predictions_partK.json files; to merge the "
                                 "parts after all, remove predictions.json")


def _current_split(out: Path, documents: dict[int, dict[str, Any]],
                   paths: dict[int, Path]) -> tuple[int, dict[int, dict[str, Any]]]:
    """The split of the latest run and its parts' records. A ``--continue`` rerun with another number of parts
    (``--num-parts``, ``--devices``) leaves the earlier split's higher parts behind: their cases are in the new
    parts' records (a part carries over what it skipped), so they are left out, with a warning."""
    def started(k: int) -> str:
        split = documents[k].get("split")
        stamp = split.get("started") if isinstance(split, dict) else None
        return str(stamp) if stamp else datetime.fromtimestamp(paths[k].stat().st_mtime, timezone.utc).isoformat()

    splits: dict[int, list[int]] = defaultdict(list)
    for k, document in documents.items():
        splits[int(document.get("num_parts", 0))].append(k)
    latest = max(splits, key=lambda n: max(started(k) for k in splits[n]))
    stale = sorted(k for n, ks in splits.items() if n != latest for k in ks)
    if stale:
        logger.warning("%s: %s are from an earlier split into %s parts and are not merged (this run has %d parts); "
                       "remove them once the merge is done", out, ", ".join(paths[k].name for k in stale),
                       sorted(n for n in splits if n != latest), latest)
    return latest, {k: documents[k] for k in splits[latest]}


def _check_split(out: Path, documents: dict[int, dict[str, Any]], num_parts: int, allow_incomplete: bool) -> None:
    problems = []
    missing = sorted(set(range(num_parts)) - set(documents))
    if missing:
        problems.append(f"part(s) {missing} of {num_parts} have no predictions_partK.json (not run, or still "
                        "running or failed)")
    stopped = {k: d.get("not_attempted") or [] for k, d in sorted(documents.items()) if d.get("complete") is False}
    for k, left in stopped.items():
        problems.append(f"part {k} stopped before it finished ({len(left)} case(s) not attempted)")
    stem = Path(layout.BATCH_PREDICTIONS).stem
    running = sorted(k for k in documents if (out / f".{stem}_part{k}.progress.jsonl").exists())
    if running:
        problems.append(f"part(s) {running} are running now or were killed (their journal of finished cases is "
                        "still there)")
    listings = {k: d["split"] for k, d in documents.items()
                if isinstance(d.get("split"), dict) and "digest" in d["split"]}
    if len({(v.get("cases"), v.get("digest")) for v in listings.values()}) > 1:
        found = ", ".join(f"part {k}: {v.get('cases')}" for k, v in sorted(listings.items()))
        problems.append(f"the parts found different inputs ({found} cases; studies added, removed or still being "
                        "copied between their starts, or another cases.csv), so some subjects may be in no part "
                        "or in two")
    elif len({v.get("problems_digest") for v in listings.values()}) > 1:  # the same split: only part 0 reports them
        logger.warning("%s: the parts found different unreadable inputs (failures.json lists those part 0 found)",
                       out)
    _refuse_or_warn(out, problems, allow_incomplete,
                    "Rerun the parts concerned with the same command and --continue (after a change of inputs: "
                    "every part), or merge what is there with --allow-incomplete", "merging anyway")
    inputs = sorted({str(d.get("input")) for d in documents.values()})
    if len(inputs) > 1:  # one folder mounted at two places on two machines is fine; two batches are not
        logger.warning("%s: the parts read different inputs %s; if these are not one folder seen from different "
                       "machines, this merge mixes two batches", out, inputs)
    describe = {k: d.get("predictor", {}) for k, d in documents.items()}
    first = min(describe)
    for k, predictor in describe.items():
        differing = setting_differences(describe[first], predictor)
        if differing:
            raise ConfigurationError(f"{out}: part {k} was predicted differently from part {first} "
                                     f"({'; '.join(differing)}); rerun it with the same options")


def _merge_predictions(documents: Sequence[dict[str, Any]], paths: Sequence[Path], num_parts: int) -> dict[str, Any]:
    predictor = dict(documents[0].get("predictor", {}))
    for key in ("model", "device"):  # may differ between machines: listed when they do
        values = sorted({str(d.get("predictor", {}).get(key)) for d in documents})
        predictor[key] = values[0] if len(values) == 1 else values
    cases: dict[str, Any] = {}
    for document in documents:
        cases.update(document.get("cases", {}))
    return {"predictor": predictor, "input": _merge_values([d.get("input") for d in documents]),
            "num_parts": num_parts, "merged_from": [p.name for p in paths],
            "complete": len(documents) == num_parts and all(d.get("complete", True) for d in documents),
            "wall_s": max(float(d.get("wall_s", 0.0)) for d in documents),
            "part_wall_s": [d.get("wall_s") for d in documents],
            **{key: sorted(n for d in documents for n in d.get(key, [])) for key in ("done", "skipped", "failed")},
            "cases": dict(sorted(cases.items()))}


def _merge_values(values: Sequence[Any]) -> Any:
    """Lists concatenated, dicts merged key by key, equal values kept, differing values listed per part."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, list) for v in present):
        return [item for v in present for item in v]
    if present and all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _merge_values([v.get(k) for v in present]) for k in keys}
    if all(v == values[0] for v in values):
        return values[0]
    return list(values)


REVIEW_COLUMNS = ("status", "review", "subject")  # the analysis tables: subjects to review first


def _merge_csv(paths: Sequence[Path]) -> pd.DataFrame:
    tables = []
    for path in paths:
        try:  # as text: a subject 0012 stays 0012, a frame 12 stays 12 (not 12.0 beside an empty cell)
            tables.append(pd.read_csv(path, dtype=str, keep_default_na=False))
        except (ValueError, OSError) as exc:
            raise InputFileError(path, f"cannot read this part's table ({type(exc).__name__}: {exc})") from exc
    merged = pd.concat(tables, ignore_index=True, sort=False).fillna("")
    merged = merged[_column_order([list(t.columns) for t in tables], list(merged.columns))]
    if set(REVIEW_COLUMNS) <= set(merged.columns):  # failed, then flagged (most flags first), then the others
        if "n_flags" in merged.columns:  # qc.csv counts them; measures.csv lists them, ';'-separated
            flags = merged["n_flags"].map(lambda v: -int(v) if str(v).isdigit() else 0)
        elif "qc_flags" in merged.columns:
            flags = merged["qc_flags"].map(lambda v: -len([f for f in str(v).split(";") if f.strip()]))
        else:
            flags = 0
        order = pd.DataFrame({"ok": merged["status"] == "ok", "calm": merged["review"].str.lower() != "true",
                              "flags": flags, "subject": merged["subject"]})
        merged = merged.loc[order.sort_values(["ok", "calm", "flags", "subject"], kind="stable").index]
        return merged.reset_index(drop=True)
    if len(merged.columns) and all(_sorted_by_first_column(t) for t in tables if len(t)):
        merged = merged.sort_values(merged.columns[0], kind="stable", ignore_index=True)
    return merged


def _column_order(orders: Sequence[list[str]], fallback: list[str]) -> list[str]:
    """One column order that keeps every part's: parts whose subjects had other QC metrics (a cine's curve
    roughness) have other metric columns, each part's sorted after the fixed ones, so where the parts leave
    a choice the name decides, which is the order one run over all subjects writes. ``fallback`` (the
    order of first appearance) where the parts disagree (tables of two autocmr versions)."""
    after: dict[str, set[str]] = {c: set() for c in fallback}
    waiting = dict.fromkeys(fallback, 0)
    for order in orders:
        for first, second in zip(order, order[1:]):
            if second not in after[first]:
                after[first].add(second)
                waiting[second] += 1
    ready = [c for c, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    result = []
    while ready:
        column = heapq.heappop(ready)
        result.append(column)
        for later in after[column]:
            waiting[later] -= 1
            if waiting[later] == 0:
                heapq.heappush(ready, later)
    return result if len(result) == len(fallback) else fallback


def _sorted_by_first_column(table: pd.DataFrame) -> bool:
    column = table.iloc[:, 0].astype(str)
    return bool(column.is_monotonic_increasing)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise InputFileError(path, f"cannot read this part's table ({type(exc).__name__}: {exc})") from exc


def _as_list(value: Any, path: Path) -> list[Any]:
    if not isinstance(value, list):
        raise InputFileError(path, f"expected a list of failures, found {type(value).__name__}")
    return value
