"""The checkpoint document: a versioned header beside the tensors, written atomically, read without ever
running code from the file.

A checkpoint is a dict of tensors and plain values (str, int, float, bool, None, lists, tuples, dicts), so
``torch.load(..., weights_only=True)`` reads it: unpickling cannot call anything a file names. Keys:

* header (:class:`CheckpointHeader`): ``format``, ``schema_version``, ``plans_name``, ``configuration``,
  ``topology``, ``epochs``, ``options``, ``weights_dtype``; training checkpoints add ``precision`` (the
  precision their ``options`` resolved to on the device that trained) and ``cases`` (the fold's sorted
  ``train`` and ``val`` case ids), which ``--continue`` compares; both absent from exported models and from
  checkpoints written before them;
* ``network``: the state dict (float32, or float16 in the compact shipped form);
* training checkpoints add ``optimizer``, ``scaler``, ``state`` (epoch, history...) and ``rng`` (tensors).

Version 1 (autocmr before this document) stored numpy's RNG state as a pickled ``numpy.ndarray``. Such files
still load, still with ``weights_only=True``: numpy's array constructor (which only rebuilds an array from its
bytes) is then the one extra callable allowed. Anything else a file asks to call is refused with a message
that names it.
"""
from __future__ import annotations

import io
import logging
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocmr.documents.versioning import check_version
from autocmr.errors import DocumentError
from autocmr.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "autocmr.checkpoint"
CHECKPOINT_SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1  # no header stamp, numpy RNG state pickled as an ndarray
SUPPORTED_VERSIONS = (LEGACY_SCHEMA_VERSION, CHECKPOINT_SCHEMA_VERSION)
HEADER_KEYS = ("plans_name", "configuration", "topology", "epochs", "options")
# Header keys of training checkpoints only: left out of the file when unset (an exported model has none)
TRAINING_HEADER_KEYS = ("precision", "cases", "data_settings")
# Augmentation presets (autocmr.trainers.augmentation.PRESETS) that train without mirroring: a network that
# never saw a mirrored heart is not averaged over mirrored passes at prediction (as nnU-Net does too)
PRESETS_WITHOUT_MIRRORING = ("none",)


def trained_with_mirroring(payload: dict[str, Any]) -> bool:
    """Whether a checkpoint's run mirrored its training patches (True when its options do not say)."""
    options = payload.get("options") if isinstance(payload, dict) else None
    augmentation = options.get("augmentation") if isinstance(options, dict) else None
    return augmentation not in PRESETS_WITHOUT_MIRRORING


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


# What a version-1 checkpoint's numpy RNG state needs (under numpy 1 and numpy 2 module names); each only
# rebuilds an array or a dtype from data, none can reach other code.
_LEGACY_GLOBAL_NAMES = frozenset({"numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct",
                                  "numpy.core.multiarray._reconstruct"})


def _legacy_safe_globals() -> list[Any]:
    reconstruct = _numpy_reconstruct()
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), (reconstruct, "numpy._core.multiarray._reconstruct"),
            (reconstruct, "numpy.core.multiarray._reconstruct")]


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself; validated before its tensors are used."""

    plans_name: str
    configuration: str
    topology: dict[str, Any]
    epochs: int | None
    options: dict[str, Any] = field(default_factory=dict)
    weights_dtype: str = "float32"
    schema_version: int = CHECKPOINT_SCHEMA_VERSION
    precision: str | None = None  # fp32, bf16 or fp16: what the run's network passes used (never "auto")
    cases: dict[str, list[str]] | None = None  # {"train": [...], "val": [...]}: the fold's case ids, sorted
    # what the plans' configuration said of the training data (autocmr.trainers.checkpoint.data_settings):
    # patch and batch size, spacing, normalisation... none of which shows in the network's tensors
    data_settings: dict[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        fields = {k: v for k, v in asdict(self).items() if v is not None or k not in TRAINING_HEADER_KEYS}
        return {"format": CHECKPOINT_FORMAT, **fields}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path | str) -> "CheckpointHeader":
        if not isinstance(payload, dict) or not isinstance(payload.get("network"), dict):
            raise DocumentError(f"{path}: not an autocmr checkpoint (no 'network' state dict)")
        fmt = payload.get("format", CHECKPOINT_FORMAT)
        if fmt != CHECKPOINT_FORMAT:
            raise DocumentError(f"{path}: checkpoint format {fmt!r} is not {CHECKPOINT_FORMAT!r}")
        version = check_version(path, payload.get("schema_version", LEGACY_SCHEMA_VERSION), kind="checkpoint",
                                supported=SUPPORTED_VERSIONS, what_to_rerun="retrain, or re-export the model")
        missing = [k for k in HEADER_KEYS if k not in payload]
        if missing:
            raise DocumentError(f"{path}: checkpoint header lacks {missing}; it was not written by autocmr_train")
        return cls(str(payload["plans_name"]), str(payload["configuration"]), dict(payload["topology"]),
                   payload["epochs"], dict(payload.get("options") or {}),
                   str(payload.get("weights_dtype", "float32")), version,
                   _optional_precision(payload.get("precision"), path), _optional_cases(payload.get("cases"), path),
                   _optional_settings(payload.get("data_settings"), path))


def _optional_precision(value: Any, path: Path | str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DocumentError(f"{path}: checkpoint header 'precision' is {value!r}, not a precision name")
    return value


def _optional_settings(value: Any, path: Path | str) -> dict[str, Any] | None:
    if value is not None and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
        raise DocumentError(f"{path}: checkpoint header 'data_settings' is {value!r}, not a mapping of settings")
    return value


def _optional_cases(value: Any, path: Path | str) -> dict[str, list[str]] | None:
    """The header's ``cases``: None, or lists of case ids under ``train`` and ``val``."""
    if value is None:
        return None
    if not (isinstance(value, dict) and set(value) == {"train", "val"}
            and all(isinstance(ids, (list, tuple)) and all(isinstance(c, str) for c in ids) for ids in value.values())):
        raise DocumentError(f"{path}: checkpoint header 'cases' is not {{'train': [case ids], 'val': [case ids]}}")
    return {"train": list(value["train"]), "val": list(value["val"])}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (header keys, ``network`` and optionally training state) atomically, stamped with the
    current format version. Refuses payloads that ``load_checkpoint`` could not read back."""
    header = CheckpointHeader.from_payload({**payload, "schema_version": CHECKPOINT_SCHEMA_VERSION}, path)
    stamped = {**payload, **header.to_payload()}
    with atomic_path(path) as tmp:
        torch.save(stamped, tmp)


def load_checkpoint(path: Path, content: bytes | None = None) -> dict[str, Any]:
    """The payload of a checkpoint, read with ``weights_only=True``; its header is validated. ``content``: the
    file's bytes as already read (and checked), loaded instead of reading ``path`` again; ``path`` names it."""
    path = Path(path)
    if content is None and not path.is_file():
        raise DocumentError(f"{path}: checkpoint not found")
    source = path if content is None else io.BytesIO(content)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        payload = _load_version_1(path, content)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        raise DocumentError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); the file is "
                            "truncated or not a checkpoint: copy it again or retrain") from exc
    CheckpointHeader.from_payload(payload, path)
    return payload


def _load_version_1(path: Path, content: bytes | None = None) -> dict[str, Any]:
    def source() -> Any:  # a fresh reader each time: torch reads a file-like object to its end
        return str(path) if content is None else io.BytesIO(content)

    try:  # lists what the pickle would call, without unpickling it
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(source()))
    except Exception as exc:  # noqa: BLE001 - a pickle torch cannot even scan
        raise DocumentError(f"{path}: refused to load: not a checkpoint torch can read safely ({exc})") from exc
    if not unsafe or not unsafe <= _LEGACY_GLOBAL_NAMES:
        foreign = sorted(unsafe - _LEGACY_GLOBAL_NAMES) or ["(unreadable pickle)"]
        raise DocumentError(f"{path}: refused to load: the checkpoint holds pickled Python objects other than "
                            f"tensors and plain values ({', '.join(foreign)}). autocmr loads checkpoints with "
                            "torch.load(weights_only=True) and never runs code from a file; this one was not "
                            "written by autocmr or was modified. Ask its author for an autocmr model folder.")
    with torch.serialization.safe_globals(_legacy_safe_globals()):
        try:
            payload = torch.load(source(), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise DocumentError(f"{path}: cannot read version-1 checkpoint ({type(exc).__name__}: {exc})") from exc
    logger.debug("%s: version-1 checkpoint (numpy RNG state as an array)", path)
    return payload


def numpy_rng_to_plain(state: tuple[Any, ...]) -> dict[str, Any]:
    """numpy's legacy RNG state tuple -> tensors and plain values (what ``weights_only`` reads)."""
    kind, keys, position, has_gauss, cached_gaussian = state
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def numpy_rng_from_plain(state: Any) -> tuple[Any, ...]:
    """Inverse of :func:`numpy_rng_to_plain`; a version-1 tuple (with an ndarray) passes through."""
    if isinstance(state, (tuple, list)):
        return tuple(state)
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["kind"], keys, state["position"], state["has_gauss"], state["cached_gaussian"])


def upgrade_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A version-1 payload in the current format (numpy RNG state as tensors); header stamped on save."""
    rng = payload.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), (tuple, list)):
        payload = {**payload, "rng": {**rng, "numpy": numpy_rng_to_plain(tuple(rng["numpy"]))}}
    return payload
