"""Final validation of a fold: the real sliding-window inference and export to native space on each
validation case, masks written as NIfTI, scored with autocmr.evaluation, and the postprocessing decision.

It sees the training run only through :class:`ValidationSettings`, which the trainer builds."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from autocmr.documents.layout import FOLD_PREFIX, POSTPROCESSING, VALIDATION_DIR, VALIDATION_SUMMARY
from autocmr.documents.plans import Configuration, Plans
from autocmr.inference.export import labels_to_native
from autocmr.inference.postprocessing import PostprocessingDecision, decide_postprocessing
from autocmr.inference.sliding_window import predict_logits
from autocmr.io.atomic import write_json_atomic
from autocmr.io.image import Geometry, read_image, write_image
from autocmr.preprocessing import storage
from autocmr.preprocessing.other_phase import with_partner
from autocmr.trainers.distributed import DistributedContext

logger = logging.getLogger(__name__)
# in validation/: which weights, cases and mirroring its masks and summary.json come from, so that a --continue
# of a finished fold keeps them instead of predicting every case again (minutes on a CPU)
VALIDATION_RECORD = "validated.json"


@dataclass(frozen=True)
class ValidationSettings:
    """What the final validation of a fold needs: the network as trained, how to predict, where to write.

    Args:
        network: the trained network (the plain one, not a data-parallel wrapper); put in eval mode to predict.
        plans: the plans it was trained with (labels, export to native space).
        config: their configuration (patch size, dimension, context slices).
        data_folder: the configuration's preprocessed cases.
        device: where to predict.
        mirror: test-time mirroring over the axes the configuration allows.
        output_dir: the fold folder; ``validation/`` and the postprocessing decision are written there.
        cases: the validation cases.
        distributed: this process's rank; the ranks share the cases and rank 0 writes.
        log: the run's log.
        partners: each case's other cardiac phase (configurations with ``other_phase``; a case without one is
            paired with itself).
    """

    network: torch.nn.Module
    plans: Plans
    config: Configuration
    data_folder: Path
    device: torch.device
    mirror: bool
    output_dir: Path
    cases: tuple[str, ...]
    distributed: DistributedContext
    log: Callable[[str], None]
    partners: Mapping[str, str] = field(default_factory=dict)

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        if not self.mirror:
            return ()
        cfg = self.config
        return (0, 1) if cfg.dim == 2 else ((1, 2) if cfg.resampling.anisotropic else (0, 1, 2))


def predict_case(settings: ValidationSettings, case_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Native-space label map of one preprocessed case with the settings' network as it is now."""
    data, _ = storage.load_arrays(settings.data_folder, case_id)
    props = storage.load_properties(settings.data_folder, case_id)
    config = settings.config
    if config.other_phase:
        partner = settings.partners.get(case_id)
        data = with_partner(data, storage.load_arrays(settings.data_folder, partner)[0] if partner else None)
    settings.network.eval()
    logits = predict_logits(settings.network, torch.from_numpy(data), patch_size=config.patch_size,
                            num_classes=len(settings.plans.labels), mirror_axes=settings.mirror_axes,
                            device=settings.device, tile_batch=16 if config.dim == 2 else 2,
                            context_slices=config.context_slices)
    label = labels_to_native(torch.softmax(logits, 0), props, settings.plans, config)
    return label, props


def time_one_case(settings: ValidationSettings) -> float:
    """Seconds to predict the first validation case (the network is back in training mode afterwards)."""
    t0 = time.monotonic()
    predict_case(settings, settings.cases[0])
    settings.network.train()
    return time.monotonic() - t0


def run_final_validation(settings: ValidationSettings, raw_folder: Path | None, file_ending: str = ".nii.gz",
                         metadata: Any = None) -> dict[str, Any]:
    """Predict and score every validation case; returns the evaluation summary (also in validation/)."""
    from autocmr.evaluation import evaluate_cases

    out = settings.output_dir / VALIDATION_DIR
    if settings.distributed.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / VALIDATION_RECORD).unlink(missing_ok=True)  # the masks are about to change
    cases, pairs, missing = [], [], []
    # data-parallel ranks predict every world_size-th case; rank 0 receives them in order, writes and scores
    predictions = settings.distributed.map_gathered(lambda c: (c, *predict_case(settings, c)), list(settings.cases))
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
    if not settings.distributed.is_main:
        return {}
    if missing:
        settings.log(f"final validation: no reference label for {len(missing)} case(s) (e.g. {missing[0]}); not scored")
    if not cases:
        return {}
    result = evaluate_cases(cases, out, labels=settings.plans.labels, metadata=metadata)
    decision = decide_postprocessing(pairs, settings.plans.foreground_labels)
    decision.save(settings.output_dir / POSTPROCESSING)
    write_json_atomic(out / VALIDATION_RECORD, _validation_identity(settings))  # last: all above is complete
    return result.summary


def weights_digest(network: torch.nn.Module) -> str:
    """sha256 of the network's parameters and buffers (names and bytes): equal digests, equal predictions."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _validation_identity(settings: ValidationSettings) -> dict[str, Any]:
    return {"weights_sha256": weights_digest(settings.network), "cases": sorted(settings.cases),
            "mirror_axes": list(settings.mirror_axes)}


def kept_validation(settings: ValidationSettings, file_ending: str = ".nii.gz") -> dict[str, Any] | None:
    """The summary of a final validation already made with these weights, cases and mirroring (a finished fold
    resumed with ``--continue``), or None when it must run: no record, another run's, or a mask missing."""
    out = settings.output_dir / VALIDATION_DIR
    try:
        record = json.loads((out / VALIDATION_RECORD).read_text())
        summary = json.loads((out / VALIDATION_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if record != _validation_identity(settings) or not isinstance(summary, dict):
        return None
    return summary if all((out / f"{case}{file_ending}").is_file() for case in settings.cases) else None


def decide_model_postprocessing(model_dir: Path, raw_folder: Path, labels: list[int],
                                file_ending: str = ".nii.gz") -> PostprocessingDecision:
    """Postprocessing for the whole model from the validation predictions of all its folds."""
    pairs = []
    for pred_path in sorted(model_dir.glob(f"{FOLD_PREFIX}*/{VALIDATION_DIR}/*{file_ending}")):
        ref_path = raw_folder / "labelsTr" / pred_path.name
        if ref_path.is_file():
            pairs.append((read_image(ref_path)[0], read_image(pred_path)[0]))
    decision = decide_postprocessing(pairs, labels)
    decision.save(model_dir / POSTPROCESSING)
    return decision
