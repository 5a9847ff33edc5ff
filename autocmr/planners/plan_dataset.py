"""`autocmr_plan`: integrity check -> fingerprint -> plans (GPU and CPU targets) -> preprocessing.

Everything is written atomically and case by case, so an interrupted run can simply be restarted: the
fingerprint is reused while the raw files are unchanged and up-to-date preprocessed cases are skipped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from autocmr import __version__
from autocmr.dataset.naming import resolve_dataset_name
from autocmr.dataset.raw import CASES_CSV, DATASET_JSON, load_raw_dataset
from autocmr.documents.plans import Plans
from autocmr.errors import PlansError
from autocmr.io.atomic import SHARED_FOLDER_STALE_S, copy_file_atomic, remove_stale_temporaries, write_json_atomic
from autocmr.parallel import default_workers, make_pool
from autocmr.planners.fingerprint import Fingerprint, compute_fingerprint, source_signature
from autocmr.planners.planner import plan
from autocmr.preprocessing.preprocessor import preprocess_stale_cases
from autocmr.settings import Roots

logger = logging.getLogger(__name__)
FINGERPRINT_JSON = "fingerprint.json"


@dataclass(frozen=True)
class PlanResult:
    dataset_folder: Path  # in the preprocessed root
    plans_files: tuple[Path, ...]
    preprocessed: dict[str, int]  # data identifier -> cases written this run
    skipped: dict[str, int]  # data identifier -> cases already up to date


def preprocessed_folder(roots: Roots, dataset: str | int) -> Path:
    name = resolve_dataset_name(dataset, roots.raw, roots.preprocessed)
    return roots.preprocessed / name


def plan_dataset(dataset: str | int, roots: Roots, *, targets: Sequence[str] = ("gpu", "cpu"),
                 configurations: Sequence[str] | None = None, num_workers: int | None = None,
                 check: bool = True, preprocess: bool = True, seed: int = 0, context_slices: int = 0,
                 other_phase: bool = False) -> PlanResult:
    """Plan (and preprocess) a raw dataset; see the module doc. ``context_slices``: neighbouring slices on each
    side that the 2d configuration sees as input channels (0: the slice alone); ``other_phase``: the networks
    also see the subject's other cardiac phase (pairs from ``cases.csv``'s subject and phase columns)."""
    name = resolve_dataset_name(dataset, roots.raw)
    raw_folder = roots.raw / name
    workers = num_workers if num_workers is not None else default_workers()
    if check:  # first: it lists every problem (cases.csv included) where loading stops at the first one
        from autocmr.dataset.integrity import check_dataset

        integrity = check_dataset(raw_folder, num_workers=workers)
        integrity.raise_if_errors()
        if integrity.warnings:  # e.g. cases.csv rows naming no case: their subjects fall back to the names
            logger.warning("%s", integrity.format())
    raw = load_raw_dataset(raw_folder)
    out = roots.preprocessed / name
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, older_than_s=SHARED_FOLDER_STALE_S)
    pool = make_pool(workers) if workers > 1 else None
    try:
        fingerprint = _fingerprint(raw, out, workers, seed, pool)
        _warn_absent_labels(fingerprint)
        plans_files, all_plans = [], []
        for target in targets:
            plans = plan(fingerprint, target=target, autocmr_version=__version__, context_slices=context_slices,
                         other_phase=other_phase)
            path = out / f"{plans.plans_name}.json"
            plans.save(path)
            plans_files.append(path)
            all_plans.append(plans)
        for f in (DATASET_JSON, CASES_CSV):
            if (raw_folder / f).is_file():
                copy_file_atomic(raw_folder / f, out / f)
            elif (out / f).is_file():  # an earlier conversion's: training would take its subjects and folds
                (out / f).unlink()
                logger.info("%s removed: %s has none now", out / f, raw_folder)
        done, skipped = {}, {}
        if preprocess:
            done, skipped = _preprocess_all(raw, all_plans, configurations, out, workers, seed, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return PlanResult(out, tuple(plans_files), done, skipped)


def _warn_absent_labels(fingerprint: Fingerprint) -> None:
    """A declared class drawn in no training case is an output the network learns never to draw (a dataset
    without RV annotations declared with autocmr's four labels): said before hours of training, not after."""
    present = {v for case in fingerprint.cases for v in case.classes}
    absent = {name: value for name, value in fingerprint.labels.items() if value != 0 and value not in present}
    if absent:
        logger.warning("%s: label(s) %s are declared in dataset.json but drawn in no training case; the network "
                       "will learn never to draw them (declare only the classes the labels hold)",
                       fingerprint.dataset_name, absent)


def _fingerprint(raw, out: Path, workers: int, seed: int, pool) -> Fingerprint:
    path = out / FINGERPRINT_JSON
    if path.is_file():
        try:
            existing = Fingerprint.load(path)
            if existing.source_signature == source_signature(raw) and existing.seed == seed:
                logger.info("reusing fingerprint %s (raw data unchanged)", path)
                return existing
        except PlansError as exc:  # corrupt, truncated or from another schema version: it is only a cache
            logger.warning("recomputing fingerprint: %s", exc)
    fingerprint = compute_fingerprint(raw, num_workers=workers, seed=seed, pool=pool)
    fingerprint.save(path)
    return fingerprint


def _preprocess_all(raw, all_plans: list[Plans], configurations, out: Path, workers: int, seed: int, pool):
    done: dict[str, int] = {}
    skipped: dict[str, int] = {}
    seen: set[str] = set()
    for plans in all_plans:
        for cname, config in plans.configurations.items():
            if configurations and cname not in configurations:
                continue
            if config.data_identifier in seen:
                continue  # another plan preprocesses identically: share its data
            seen.add(config.data_identifier)
            folder = out / config.data_identifier
            done[config.data_identifier], skipped[config.data_identifier] = preprocess_stale_cases(
                raw, plans, config, folder, num_workers=workers, seed=seed, pool=pool)
            write_json_atomic(folder / "configuration.json", {"plans": plans.plans_name, "configuration": cname,
                                                               "data_identifier": config.data_identifier})
    planned = {c for plans in all_plans for c in plans.configurations}
    for cname in sorted(set(configurations or ()) - planned):  # e.g. 3d_fullres of single-slice images
        logger.warning("configuration %r was not planned for this dataset (its plans have %s), so nothing was "
                       "preprocessed for it", cname, sorted(planned))
    return done, skipped
