"""A small trained model on phantoms, for tests and examples that need a real model folder quickly."""
from __future__ import annotations

from pathlib import Path

from autocmr.settings import Roots, resolve_roots

TINY_DATASET_ID = 990


def make_tiny_model(workdir: str | Path, *, n_subjects: int = 6, epochs: int = 1, iterations: int = 6,
                    configuration: str = "2d", seed: int = 0, final_validation: bool = False,
                    context_slices: int = 0, other_phase: bool = False) -> tuple[Path, Roots]:
    """Phantom dataset -> CPU plans (2d with ``context_slices``; ``other_phase``) -> a short training of
    fold 0. Returns (model folder, roots)."""
    from autocmr.planners.plan_dataset import plan_dataset
    from autocmr.testing.phantoms import write_phantom_dataset
    from autocmr.trainers.options import TrainOptions
    from autocmr.trainers.run import train

    workdir = Path(workdir)
    roots = resolve_roots(raw=workdir / "raw", preprocessed=workdir / "preprocessed", results=workdir / "results")
    write_phantom_dataset(roots.raw, n_subjects=n_subjects, seed=seed, dataset_id=TINY_DATASET_ID)
    plan_dataset(TINY_DATASET_ID, roots, targets=("cpu",), configurations=(configuration,), num_workers=1, check=False,
                 context_slices=context_slices, other_phase=other_phase)
    options = TrainOptions(epochs=epochs, iterations_per_epoch=iterations, val_iterations=2, num_workers=0,
                           batch_size=2, device="cpu", seed=seed, final_validation=final_validation)
    result = train(TINY_DATASET_ID, configuration, 0, roots, options=options, plans_name="autocmrPlans_cpu")
    return result.fold_dir.parent, roots
