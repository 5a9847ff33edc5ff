"""Predict label maps with a trained model folder: preprocessing as in training, sliding window over
every fold's network (softmax averaged), export to native space, postprocessing."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
import torch

from autocmr.documents.checkpoint import trained_with_mirroring
from autocmr.documents.layout import checkpoint_relpath
from autocmr.device import resolve_device
from autocmr.errors import ConfigurationError, InputFileError
from autocmr.inference.export import labels_to_native, probabilities_to_native
from autocmr.inference.postprocessing import PostprocessingDecision
from autocmr.inference.sliding_window import (DEFAULT_STEP, MemberSpread, Window, crop_to_window,
                                              disagreement_score, embed_in_background, predict_logits,
                                              predict_logits_and_spread)
from autocmr.io.image import Geometry
from autocmr.io.orientation import Reorientation, canonical_reorientation
from autocmr.io.validity import check_spacing, check_voxels
from autocmr.models.folder import ModelFolder
from autocmr.planners.plans import Configuration, Plans
from autocmr.precision import resolve_precision
from autocmr.preprocessing.other_phase import pair_aligned, with_partner
from autocmr.preprocessing.preprocessor import preprocess_arrays

logger = logging.getLogger(__name__)
POSTPROCESS_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Prediction:
    label: np.ndarray  # uint8, stored order of the input
    probabilities: np.ndarray | None  # float32 (C, ...) in stored order, when requested
    uncertainty: float = float("nan")  # members' disagreement (sliding_window.disagreement_score); NaN: not computed


def clear_slices(label: np.ndarray, probabilities: np.ndarray | None, slices: Collection[int]) -> None:
    """Make ``slices`` (along the first axis of the stored order, z) background, in place, in the mask and in its
    probabilities (C, z, y, x): the slices of a DICOM stack no image fills, where nothing is segmented."""
    index = sorted({int(z) for z in slices})
    if not index:
        return
    label[index] = 0
    if probabilities is not None:
        probabilities[:, index] = 0
        probabilities[0, index] = 1


@dataclass(frozen=True)
class PredictorOptions:
    """How to build a :class:`Predictor` from a model folder (see its arguments)."""

    folds: tuple[str, ...] | None = None  # None: every fold with the checkpoint
    checkpoint: str = "final"
    device: str = "auto"
    mirror: bool = True
    step: float = DEFAULT_STEP
    postprocess: str = "auto"
    harmonise: bool = False
    tile_batch: int | None = None
    precision: str = "auto"

    def build(self, model_dir: str | Path) -> Predictor:
        return Predictor(model_dir, folds=self.folds, checkpoint=self.checkpoint, device=self.device,
                         mirror=self.mirror, step=self.step, tile_batch=self.tile_batch,
                         postprocess=self.postprocess, harmonise=self.harmonise, precision=self.precision)


class Predictor:
    """Holds the networks of a model folder; thread-unsafe, one per process.

    CPU prediction is faster with :func:`autocmr.allocator.keep_freed_memory` (sliding-window tiles re-allocate
    the same buffers), a process-wide allocator setting that ``autocmr_predict`` applies; a Python caller opts
    in by calling it before predicting.
    """

    def __init__(self, model_dir: str | Path, *, folds: Sequence[str | int] | None = None, checkpoint: str = "final",
                 device: str = "auto", mirror: bool = True, step: float = DEFAULT_STEP, tile_batch: int | None = None,
                 postprocess: str = "auto", harmonise: bool = False, precision: str = "auto") -> None:
        if postprocess not in POSTPROCESS_MODES:
            raise ConfigurationError(f"postprocess must be one of {POSTPROCESS_MODES}, got {postprocess!r}")
        if not 0 < step <= 1:
            raise ConfigurationError(f"step must be in (0, 1], got {step}")
        self.model = ModelFolder.open(model_dir)
        self.plans, self.config = self.model.plans, self.model.configuration
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, training=False)
        self.folds = [str(f) for f in folds] if folds else self.model.available_folds(checkpoint)
        self.checkpoint = checkpoint
        loaded = self.model.load_networks_and_headers(self.folds, checkpoint, self.device)
        self.networks = [network for network, _ in loaded]
        self.step = step
        dim = self.config.dim
        anisotropic = self.config.resampling.anisotropic
        axes = (0, 1) if dim == 2 else ((1, 2) if anisotropic else (0, 1, 2))
        if mirror and not any(trained_with_mirroring(header) for _, header in loaded):
            # networks that never saw a mirrored heart would average passes unlike anything they learnt
            logger.info("%s: trained without mirroring (--augmentation none): predicted without test-time "
                        "mirroring", self.model.path)
            mirror = False
        self.mirror_axes: tuple[int, ...] = axes if mirror else ()
        self.tile_batch = tile_batch or (16 if dim == 2 else 2)
        self.postprocessing = self._postprocessing(postprocess)
        self.harmoniser = None
        if harmonise:
            from autocmr.inference.harmonisation import Harmoniser

            self.harmoniser = Harmoniser.from_model_folder(self.model)

    def _postprocessing(self, mode: str) -> PostprocessingDecision:
        if mode == "off":
            return PostprocessingDecision()
        if mode == "on":
            return PostprocessingDecision(True, tuple(self.plans.foreground_labels))
        stored = self.model.read_json("postprocessing.json")
        return (PostprocessingDecision.from_dict(stored, source=self.model.path / "postprocessing.json") if stored
                else PostprocessingDecision())

    def network_input(self, data: np.ndarray) -> np.ndarray:
        """Preprocessed ``data`` as the networks take it. A model trained with the other cardiac phase
        (``other_phase``) gets the image itself in the other phase's channels when ``data`` has only the image's
        (what training's partner dropout taught it); data already paired (:meth:`paired`) pass unchanged."""
        n = len(self.plans.channel_names)
        if self.config.other_phase and data.shape[0] == n:
            return with_partner(data)
        expected = self.config.image_channels(n)
        if data.shape[0] != expected:
            raise ConfigurationError(f"preprocessed data have {data.shape[0]} channel(s); this model takes {expected}")
        return data

    def paired(self, data: np.ndarray, props: dict[str, Any], partner: np.ndarray | None,
               partner_props: dict[str, Any] | None) -> np.ndarray:
        """Preprocessed ``data`` with the other phase's preprocessed ``partner`` as extra channels, for a model
        with ``other_phase`` (others: ``data`` unchanged). A partner that does not lie on the same voxel grid
        (:func:`autocmr.preprocessing.other_phase.aligned`) is replaced by the image itself, with a warning."""
        if not self.config.other_phase:
            return data
        paired, problem = pair_aligned(data, props, partner, partner_props)
        if problem:
            logger.warning("%s: %s; predicted with the image itself in its place", props.get("case_id", "the image"),
                           problem)
        return paired

    @torch.no_grad()
    def probabilities(self, data: np.ndarray, window: Window | None = None) -> torch.Tensor:
        """Softmax probabilities (C, z, y, x) averaged over folds, for preprocessed ``data`` (c, z, y, x);
        with an in-plane ``window``, predicted inside it only and background outside."""
        data = self.network_input(data)
        x = crop_to_window(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), window)
        total = None
        for network in self.networks:
            logits = predict_logits(network, x, patch_size=self.config.patch_size, num_classes=self.model.num_classes(),
                                    step=self.step, mirror_axes=self.mirror_axes, tile_batch=self.tile_batch,
                                    device=self.device, context_slices=self.config.context_slices,
                                    precision=self.precision)
            probs = torch.softmax(logits, dim=0)
            total = probs if total is None else total + probs
        return embed_in_background(total / len(self.networks), data.shape[1:], window)

    @torch.no_grad()
    def probabilities_and_uncertainty(self, data: np.ndarray,
                                      window: Window | None = None) -> tuple[torch.Tensor, float]:
        """:meth:`probabilities` (the same values) and the disagreement of the ensemble's members (every
        fold x every mirroring) from the same passes; NaN when there is a single member. With a ``window``
        the disagreement is that inside the window."""
        data = self.network_input(data)
        x = crop_to_window(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), window)
        total: torch.Tensor | None = None
        spread: MemberSpread | None = None
        for network in self.networks:
            logits, member_spread = predict_logits_and_spread(
                network, x, patch_size=self.config.patch_size, num_classes=self.model.num_classes(), step=self.step,
                mirror_axes=self.mirror_axes, tile_batch=self.tile_batch, device=self.device,
                context_slices=self.config.context_slices, precision=self.precision)
            probs = torch.softmax(logits, dim=0)
            total = probs if total is None else total + probs
            spread = member_spread if spread is None else spread.add(member_spread)
        assert total is not None and spread is not None
        mean = total / len(self.networks)
        return embed_in_background(mean, data.shape[1:], window), disagreement_score(spread, mean)

    def preprocess(self, data: np.ndarray, spacing: Sequence[float],
                   reorientation: Reorientation) -> tuple[np.ndarray, dict[str, Any]]:
        """Stage 1 (CPU, can run in a worker): canonical ``data`` (c, z, y, x) -> network input + properties."""
        return preprocess_for_model(data, spacing, reorientation, self.plans, self.config, self.harmoniser)

    def export(self, probabilities: torch.Tensor, props: dict[str, Any], *,
               return_probabilities: bool = False) -> Prediction:
        """Stage 3 (CPU, can run in a worker): see :func:`export_prediction`."""
        return export_prediction(probabilities, props, self.plans, self.config, self.postprocessing,
                                 return_probabilities=return_probabilities)

    def predict_canonical(self, data: np.ndarray, spacing: Sequence[float], reorientation: Reorientation,
                          *, return_probabilities: bool = False, partner: np.ndarray | None = None) -> Prediction:
        """``data`` (c, z, y, x) in canonical order with canonical ``spacing``; output in stored order.
        ``partner``: the subject's other cardiac phase, on the same grid as ``data``, for a model with
        ``other_phase`` (ignored by others; without it the image stands in for it)."""
        pre, props = self.preprocess(data, spacing, reorientation)
        if self.config.other_phase:
            partner_pre, partner_props = (self.preprocess(partner, spacing, reorientation) if partner is not None
                                          else (None, None))
            pre = self.paired(pre, props, partner_pre, partner_props)
        probabilities, uncertainty = self.probabilities_and_uncertainty(pre)
        return replace(self.export(probabilities, props, return_probabilities=return_probabilities),
                       uncertainty=uncertainty)

    def predict_array(self, image: np.ndarray, spacing: Sequence[float], *, direction: Sequence[float] | None = None,
                      return_probabilities: bool = False, partner: np.ndarray | None = None) -> Prediction:
        """Segment an in-memory image (z, y, x) or (c, z, y, x) with ``spacing`` in the same numpy order.

        ``direction`` (9 values, SimpleITK order) lets the model see the image in canonical orientation;
        without it the array is taken as already canonical. ``partner``: the other cardiac phase of the same
        subject and grid (ES for an ED image and vice versa), used by a model trained with ``other_phase``.
        """
        data = image[None] if image.ndim == 3 else image
        check_voxels(data, "<array>")  # the policy of every file path: NaN would empty the mask without a word
        if partner is not None:
            if (partner[None] if partner.ndim == 3 else partner).shape != data.shape:
                raise InputFileError("<array>", f"the other phase has shape {partner.shape}, the image {image.shape}")
            check_voxels(partner, "<array> (other phase)")
        check_spacing(spacing, "<array>")  # the readers refuse these too; resampling would squash the image
        if direction is not None and len(direction) != 9:
            raise InputFileError("<array>", f"direction needs 9 values (a 3x3 matrix), got {len(direction)}")
        size = tuple(reversed(data.shape[1:]))
        geometry = Geometry(size, tuple(float(s) for s in reversed(spacing)), (0.0, 0.0, 0.0),
                            tuple(direction) if direction is not None else tuple(np.eye(3).ravel()))
        reo = canonical_reorientation(geometry)
        other = None if partner is None else np.ascontiguousarray(reo.apply(partner[None] if partner.ndim == 3
                                                                             else partner))
        return self.predict_canonical(np.ascontiguousarray(reo.apply(data)), reo.spacing(tuple(spacing)), reo,
                                      return_probabilities=return_probabilities, partner=other)

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.model.path), "configuration": self.config.name, "folds": self.folds,
                "checkpoint": self.checkpoint, "device": str(self.device), "mirror_axes": list(self.mirror_axes),
                "step": self.step, "precision": self.precision, "harmonise": self.harmoniser is not None,
                "postprocessing": {"foreground_lcc": self.postprocessing.foreground_lcc,
                                   "per_label_lcc": list(self.postprocessing.per_label_lcc)},
                **({"weights": weights} if (weights := self.weight_checksums()) else {})}

    def weight_checksums(self) -> dict[str, str]:
        """The sha256 of each checkpoint this predictor runs, from the model's manifest (empty when the manifest
        does not list them all): a record of which model predicted that holds wherever the folder is copied."""
        if self.model.manifest is None:
            return {}
        return self.model.manifest.checksums_of(checkpoint_relpath(fold, self.checkpoint) for fold in self.folds)


def export_prediction(probabilities: torch.Tensor, props: dict[str, Any], plans: Plans, config: Configuration,
                      postprocessing: PostprocessingDecision, *, return_probabilities: bool = False) -> Prediction:
    """Probabilities in network space -> postprocessed label map (and optionally probabilities) in the
    input's stored order. A plain function of picklable arguments, so it can run in a worker process."""
    label = postprocessing.apply(labels_to_native(probabilities, props, plans, config))
    probs = probabilities_to_native(probabilities, props, plans, config) if return_probabilities else None
    return Prediction(label, probs)


def preprocess_for_model(data: np.ndarray, spacing: Sequence[float], reorientation: Reorientation, plans: Plans,
                         config: Configuration, harmoniser: Any = None, *,
                         source: str | Path = "<array>") -> tuple[np.ndarray, dict[str, Any]]:
    """Canonical ``data`` (c, z, y, x) -> network input and properties, exactly as in training (plus the
    optional harmonisation). A plain function of picklable arguments, so it can run in a worker process."""
    channels = len(plans.channel_names)
    if data.ndim != 4 or data.shape[0] != channels:
        raise InputFileError(source, f"expected {channels} channel(s) of a 3D image, got array of shape {data.shape}")
    pre, _, props = preprocess_arrays(data, None, tuple(spacing), plans, config)
    if harmoniser is not None:
        pre = harmoniser.apply(pre)
    props["reorientation"] = reorientation.to_dict()
    return pre, props
