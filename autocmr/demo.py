"""The quick start: the whole chain on phantoms the package generates itself, in a few minutes on a CPU.

generate phantom subjects -> plan (CPU target, 2d) -> train fold 0 for a short budget -> predict held-back
phantom subjects -> evaluate (Dice, HD95, clinical measures) -> print the table. Everything is left under
one folder so the user can look at every stage's files.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autocmr.dataset.raw import write_cases_csv
from autocmr.errors import OutputPathError
from autocmr.io.image import write_image
from autocmr.settings import Roots, resolve_roots

logger = logging.getLogger(__name__)
DEMO_DATASET_ID = 900
DEMO_FOV_MM = 160.0  # small images keep the demo fast; the anatomy is full size
# Written into the demo folder first: a rerun may clear a folder only if it holds this file (an earlier demo's).
DEMO_MARKER = ".autocmr_demo"


@dataclass(frozen=True)
class DemoResult:
    folder: Path
    mean_dice: float
    seconds: dict[str, float]
    report: str
    failures: tuple[str, ...] = ()  # held-back cases that could not be predicted, "case: reason"


def write_test_subjects(folder: Path, n_subjects: int, seed: int) -> tuple[Path, Path]:
    """Held-back phantom subjects (never seen in training): images, labels and cases.csv."""
    from autocmr.io.orientation import store_permuted
    from autocmr.testing.phantoms import make_phantom_subject

    rng = np.random.default_rng(seed)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        subject = f"test{s:03d}"
        axes, flips = tuple(int(a) for a in rng.permutation(3)), tuple(bool(f) for f in rng.random(3) < 0.5)
        for phase, case in make_phantom_subject(rng, fov_mm=DEMO_FOV_MM).items():
            img, geometry = store_permuted(case.image, case.geometry, axes, flips)
            lab, _ = store_permuted(case.label, case.geometry, axes, flips)
            write_image(img, geometry, images / f"{subject}_{phase}_0000.nii.gz")
            write_image(lab, geometry, labels / f"{subject}_{phase}.nii.gz")
            rows.append({"case_id": f"{subject}_{phase}", "subject": subject, "phase": phase, "group": "phantom"})
    write_cases_csv(labels, rows)
    return images, labels


def run_demo(folder: str | Path, *, minutes: float = 4.0, n_subjects: int = 16, n_test: int = 4, seed: int = 0,
             device: str = "cpu") -> DemoResult:
    from autocmr.analysis.pipeline import analyse_batch
    from autocmr.evaluation import evaluate_folders
    from autocmr.inference.batch import PredictorOptions, predict_folder
    from autocmr.planners.plan_dataset import plan_dataset
    from autocmr.testing.phantoms import write_phantom_dataset
    from autocmr.trainers.options import TrainOptions
    from autocmr.trainers.run import train

    folder = prepare_demo_folder(Path(folder))
    roots: Roots = resolve_roots(raw=folder / "raw", preprocessed=folder / "preprocessed", results=folder / "results")
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    write_phantom_dataset(roots.raw, n_subjects=n_subjects, seed=seed, dataset_id=DEMO_DATASET_ID,
                          short_name="DemoPhantom", fov_mm=DEMO_FOV_MM, reorient=True)
    images, labels = write_test_subjects(folder / "test", n_test, seed + 1)
    seconds["generate"] = time.monotonic() - t0
    t0 = time.monotonic()
    plan_dataset(DEMO_DATASET_ID, roots, targets=("cpu",), configurations=("2d",))
    seconds["plan"] = time.monotonic() - t0
    t0 = time.monotonic()
    options = TrainOptions(time_budget_s=minutes * 60, iterations_per_epoch=50, val_iterations=10, device=device,
                           seed=seed, save_every=2)
    result = train(DEMO_DATASET_ID, "2d", 0, roots, options=options, plans_name="autocmrPlans_cpu")
    seconds["train"] = time.monotonic() - t0
    t0 = time.monotonic()
    report = predict_folder(images, folder / "predictions", result.fold_dir.parent,
                            options=PredictorOptions(device=device), after_batch=analyse_batch)
    failures = tuple(f"{f.name}: {f.file}: {f.reason}" for f in report.failures)
    if failures:
        logger.warning("prediction failures:\n  %s", "\n  ".join(failures))
    seconds["predict"] = time.monotonic() - t0
    t0 = time.monotonic()
    evaluation = evaluate_folders(labels, folder / "predictions", folder / "evaluation",
                                  metadata=labels / "cases.csv", by=["phase"])
    seconds["evaluate"] = time.monotonic() - t0
    mean_dice = float(evaluation.summary["mean_over_classes"]["dice"])
    return DemoResult(folder, mean_dice, seconds, evaluation.report(), failures)


DEMO_ENTRIES = {"raw", "preprocessed", "results", "predictions", "evaluation", "test", DEMO_MARKER}


def _made_by_demo(folder: Path) -> bool:
    """The marker, or (a demo of a version before the marker) nothing but the demo's folders around its dataset."""
    if (folder / DEMO_MARKER).is_file():
        return True
    names = {p.name for p in folder.iterdir()}
    return names <= DEMO_ENTRIES and any((folder / "raw").glob(f"Dataset{DEMO_DATASET_ID}_*"))


def prepare_demo_folder(folder: Path) -> Path:
    """An empty folder for the demo. An earlier demo's folder (it holds :data:`DEMO_MARKER`) is cleared; any other
    folder with files in it is refused, so that ``-o`` pointing at the wrong place never deletes anything."""
    folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(folder, "is a file; the demo needs a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not _made_by_demo(folder):
            raise OutputPathError(folder, "is not empty and was not made by autocmr_demo; choose a new or empty "
                                          "folder with -o (the demo clears its folder when it runs again)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARKER).write_text("made by autocmr_demo; a rerun clears this folder\n", encoding="utf-8")
    return folder
