"""Training options: everything that changes a run is a field here (and a CLI flag), not a subclass.

The resolved options are stored in the run folder with their hash, which identifies the experiment.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from autocmr.errors import ConfigurationError
from autocmr.precision import PRECISIONS

FREEZE_CHOICES = ("none", "encoder", "decoder")
LEARNING_RATE = 1e-2
# Fine-tuning starts ten times lower: at 1e-2 (with momentum 0.99) a few cases of a new site pull the
# pretrained weights far from what they learnt, and the tuned model ends up worse than the untuned one.
FINETUNE_LEARNING_RATE = 1e-3
# Options that decide how fast or where a run goes, or how its finished weights are validated, not what it
# learns: left out of the hash that names the experiment, and free to change when a run is resumed (batches are
# the same whatever the number of workers; a run resumed to get its final validation after all learns the same
# weights; the validation records whether it mirrored).
RUNTIME_ONLY_OPTIONS = frozenset({"device", "num_workers", "save_every", "final_validation", "mirror_validation"})
# Names of the augmentation presets (autocmr.trainers.augmentation.PRESETS holds their parameters): known here
# so that a wrong name is refused before any data is loaded or any file written.
AUGMENTATION_PRESETS = ("default", "cross-domain", "none")
PATCH_PLACEMENTS = ("anywhere", "inside")


@dataclass(frozen=True)
class TrainOptions:
    """Options of one training run. ``None`` means: choose a sensible value for this device/plan."""

    epochs: int | None = None  # default 1000 on GPU; on CPU the time budget decides
    iterations_per_epoch: int = 250
    val_iterations: int = 50  # pseudo-Dice batches per epoch (no augmentation)
    learning_rate: float | None = None  # LEARNING_RATE, or FINETUNE_LEARNING_RATE with ``pretrained``
    weight_decay: float = 3e-5
    momentum: float = 0.99
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    augmentation: str = "default"
    elastic: bool = False  # add elastic deformation to the preset (slower; off in the nnU-Net recipe)
    end_slice_oversampling: float = 0.0  # 2d: share of each batch drawn from the end slices of the labelled extent
    # Where a training patch may lie: "anywhere" (centred on any voxel, so up to half of it padding: the recipe of
    # every result so far) or "inside" (nnU-Net's rule: the final patch within the image where it fits, centred
    # where it does not; inference tiles never leave the image). A recipe choice for cross-validation to decide.
    patch_placement: str = "anywhere"
    # With plans whose configuration has other_phase: the chance that a sample sees itself where the other phase
    # would be, so that one network also segments volumes that come without their other phase
    other_phase_dropout: float = 0.2
    # Weight of the soft-Dice term beside cross-entropy (1: nnU-Net's Dice + CE; 0: cross-entropy only). Soft
    # Dice buys overlap with volume: where the border is uncertain its optimum is a larger structure than the
    # labels' (Bertels et al. 2019), which is what thin myocardium and the basal RV show (README, issue #15).
    dice_weight: float = 1.0
    # If set, the Dice weight goes linearly from ``dice_weight`` at the start of the schedule to this at its end
    # (with the learning rate's progress): Dice's fast start on small classes, a cross-entropy optimum at the end.
    dice_weight_end: float | None = None
    precision: str = "auto"  # network passes: auto (fp16 on CUDA, fp32 elsewhere), fp32, bf16 or fp16
                             # (autocmr.precision)
    time_budget_s: float | None = None  # wall-clock budget for the whole run (training + final validation)
    seed: int = 0
    device: str = "auto"
    num_workers: int | None = None  # background augmentation workers
    batch_size: int | None = None  # override the plans' batch size
    save_every: int = 5  # epochs between 'latest' checkpoints
    ema_decay: float = 0.9  # of the pseudo-Dice used to pick the best checkpoint
    deep_supervision: bool = True
    final_validation: bool = True
    mirror_validation: bool = True  # test-time mirroring in the final validation
    pretrained: str | None = None  # model folder (or checkpoint) to fine-tune from
    freeze: str = "none"
    unfreeze_blocks: int = 0  # with --freeze encoder: still train this many of the first encoder stages

    def __post_init__(self) -> None:
        if self.pretrained and Path(self.pretrained).expanduser().exists():  # a folder named relative to the cwd
            object.__setattr__(self, "pretrained", _resolved(self.pretrained))  # means it from any cwd on resume
        if self.learning_rate is None:  # frozen dataclass: resolve the default once, so it is stored and hashed
            object.__setattr__(self, "learning_rate", FINETUNE_LEARNING_RATE if self.pretrained else LEARNING_RATE)
        if self.freeze not in FREEZE_CHOICES:
            raise ConfigurationError(f"--freeze must be one of {FREEZE_CHOICES}, got {self.freeze!r}")
        if self.freeze != "none" and not self.pretrained:  # nothing to keep fixed: it would be ignored silently
            raise ConfigurationError(f"--freeze {self.freeze} needs --pretrained MODEL (the weights to keep fixed)")
        for name in ("iterations_per_epoch", "save_every", "val_iterations"):  # 0 validation batches: no pseudo-Dice
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:  # numpy's seed sequences take non-negative integers only
            raise ConfigurationError(f"--seed must be >= 0, got {self.seed}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigurationError(f"epochs must be >= 1, got {self.epochs}")
        if self.time_budget_s is not None and not (0 < self.time_budget_s < float("inf")):  # NaN too
            raise ConfigurationError(f"time budget must be positive, got {self.time_budget_s} s")
        if not 0.0 <= self.end_slice_oversampling <= 1.0:
            raise ConfigurationError(f"end-slice oversampling is a share of the batch in [0, 1], "
                                     f"got {self.end_slice_oversampling}")
        if self.patch_placement not in PATCH_PLACEMENTS:
            raise ConfigurationError(f"--patch-placement must be one of {PATCH_PLACEMENTS}, got "
                                     f"{self.patch_placement!r}")
        if not 0.0 <= self.other_phase_dropout <= 1.0:  # also rejects NaN
            raise ConfigurationError(f"--other-phase-dropout is a probability in [0, 1], "
                                     f"got {self.other_phase_dropout}")
        if not self.dice_weight >= 0.0:  # also rejects NaN
            raise ConfigurationError(f"--dice-weight must be >= 0, got {self.dice_weight}")
        if self.dice_weight_end is not None and not self.dice_weight_end >= 0.0:
            raise ConfigurationError(f"--dice-weight-end must be >= 0, got {self.dice_weight_end}")
        if self.precision not in PRECISIONS:
            raise ConfigurationError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigurationError(f"learning rate must be a positive number, got {self.learning_rate}")
        if self.augmentation not in AUGMENTATION_PRESETS:
            raise ConfigurationError(f"--augmentation must be one of {AUGMENTATION_PRESETS}, got {self.augmentation!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigurationError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigurationError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.unfreeze_blocks < 0 or (self.unfreeze_blocks and self.freeze != "encoder"):
            raise ConfigurationError(f"--unfreeze-blocks {self.unfreeze_blocks}: a number >= 0, and only with "
                                     "--freeze encoder")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result_options(self) -> dict[str, Any]:
        """The options that change what the run learns (all but :data:`RUNTIME_ONLY_OPTIONS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_ONLY_OPTIONS}

    def digest(self) -> str:
        """Hash of :meth:`result_options`: two runs with the same digest learn the same thing."""
        return hashlib.sha256(json.dumps(self.result_options(), sort_keys=True).encode()).hexdigest()[:12]

    def differences_from(self, stored: dict[str, Any]) -> list[str]:
        """Result-changing options whose ``stored`` value (a run's saved options) differs from this one's, as
        ``"name: stored -> requested"``. An option missing from ``stored`` (added to autocmr after that run was
        started) counts as its default; one this autocmr does not know is reported as a difference."""
        defaults = {f.name: f.default for f in fields(self)}
        changes = []
        for name, requested in self.result_options().items():
            before = stored.get(name, defaults[name])
            if name == "pretrained" and before and requested and _resolved(before) == _resolved(requested):
                continue  # one folder named relatively (a run started before paths were stored resolved) and not
            if _normalised(before) != _normalised(requested):
                changes.append(f"{name}: {before!r} -> {requested!r}")
        changes += [f"{name}: {value!r} -> (unknown to this autocmr)" for name, value in sorted(stored.items())
                    if name not in defaults]
        return changes

    def updated(self, **changes: Any) -> "TrainOptions":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:  # never drop a setting silently: it may have changed the run
            raise ConfigurationError(f"unknown training option(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def _resolved(path: str) -> str:
    """A model folder path as an absolute one; a model name (``default``) that is no path stays as it is."""
    candidate = Path(path).expanduser()
    return str(candidate.resolve()) if candidate.exists() else path


def _normalised(value: Any) -> Any:
    """JSON round trips turn tuples into lists and ints into floats where a float was stored."""
    return json.loads(json.dumps(value))


def parse_duration(text: str) -> float:
    """'60m', '1h30m', '45s', '2h' or plain seconds -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise ConfigurationError(f"cannot read duration {text!r}; use e.g. 60m, 1h30m, 90s")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * scale[u] for n, u in parts)
