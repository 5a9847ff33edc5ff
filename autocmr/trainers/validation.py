"""Final validation of a fold: the real sliding-window inference and export to native space on each
validation case, masks written as NIfTI, scored with autocmr.evaluation, and the postprocessing decision."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from autocmr.inference.export import labels_to_native
from autocmr.inference.postprocessing import PostprocessingDecision, decide_postprocessing
from autocmr.inference.sliding_window import predict_logits
from autocmr.io.image import Geometry, read_image, write_image
from autocmr.preprocessing import storage

if TYPE_CHECKING:
    from autocmr.trainers.trainer import Trainer

logger = logging.getLogger(__name__)
VALIDATION_DIR = "validation"


def _mirror_axes(trainer: "Trainer") -> tuple[int, ...]:
    if not trainer.options.mirror_validation:
        return ()
    cfg = trainer.config
    return (0, 1) if cfg.dim == 2 else ((1, 2) if cfg.resampling.anisotropic else (0, 1, 2))


def predict_case(trainer: "Trainer", case_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Native-space label map of one preprocessed case with the trainer's current network."""
    data, _ = storage.load_arrays(trainer.data_folder, case_id)
    props = storage.load_properties(trainer.data_folder, case_id)
    trainer.network.eval()
    logits = predict_logits(trainer.network, torch.from_numpy(data), patch_size=trainer.config.patch_size,
                            num_classes=len(trainer.plans.labels), mirror_axes=_mirror_axes(trainer),
                            device=trainer.device, tile_batch=16 if trainer.config.dim == 2 else 2)
    label = labels_to_native(torch.softmax(logits, 0), props, trainer.plans, trainer.config)
    return label, props


def time_one_case(trainer: "Trainer") -> float:
    t0 = time.monotonic()
    predict_case(trainer, trainer.val_cases[0])
    trainer.network.train()
    return time.monotonic() - t0


def run_final_validation(trainer: "Trainer", raw_folder: Path | None, file_ending: str = ".nii.gz",
                         metadata: Any = None) -> dict[str, Any]:
    """Predict and score every validation case; returns the evaluation summary (also in validation/)."""
    from autocmr.evaluation import evaluate_cases

    out = trainer.output_dir / VALIDATION_DIR
    if trainer.distributed.is_main:
        out.mkdir(parents=True, exist_ok=True)
    cases, pairs, missing = [], [], []
    # data-parallel ranks predict every world_size-th case; rank 0 receives them in order, writes and scores
    predictions = trainer.distributed.map_gathered(lambda c: (c, *predict_case(trainer, c)), trainer.val_cases)
    for case_id, label, props in predictions:
        geometry = Geometry.from_dict(props["geometry"])
        write_image(label, geometry, out / f"{case_id}{file_ending}")
        ref_path = raw_folder / "labelsTr" / f"{case_id}{file_ending}" if raw_folder else None
        if ref_path is None or not ref_path.is_file():
            missing.append(case_id)
            continue
        reference, _ = read_image(ref_path)
        cases.append((case_id, reference.astype(np.uint8), label, geometry.spacing_zyx))
        pairs.append((reference, label))
    if not trainer.distributed.is_main:
        return {}
    if missing:
        trainer.log(f"final validation: no reference label for {len(missing)} case(s) (e.g. {missing[0]}); not scored")
    if not cases:
        return {}
    result = evaluate_cases(cases, out, labels=trainer.plans.labels, metadata=metadata)
    decision = decide_postprocessing(pairs, trainer.plans.foreground_labels)
    decision.save(trainer.output_dir / "postprocessing.json")
    return result.summary


def decide_model_postprocessing(model_dir: Path, raw_folder: Path, labels: list[int], file_ending: str = ".nii.gz") -> PostprocessingDecision:
    """Postprocessing for the whole model from the validation predictions of all its folds."""
    pairs = []
    for pred_path in sorted(model_dir.glob(f"fold_*/{VALIDATION_DIR}/*{file_ending}")):
        ref_path = raw_folder / "labelsTr" / pred_path.name
        if ref_path.is_file():
            pairs.append((read_image(ref_path)[0], read_image(pred_path)[0]))
    decision = decide_postprocessing(pairs, labels)
    decision.save(model_dir / "postprocessing.json")
    return decision
