"""When two runs into one output folder count as one batch: the settings their records must share, and the
list of inputs a split into parts was dealt from.

Two records describe one batch when every result-changing setting of ``Predictor.describe()`` (plus the cine
options) agrees. The device never counts (a batch continued on another device is still one batch). The model
counts by its weights where both records name their sha256 (copied between machines or mounted at another
path, a model folder is the same model); by its resolved path otherwise, and then only within one part:
the parts of a cluster run may see one model folder at different mount points, so across parts only the
weights (when known) decide. Precision counts everywhere: ``--precision auto`` picks bfloat16 on one CPU and
float32 on another, which changes masks; a mixed cluster passes ``--precision`` explicitly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

# Settings of predictions.json's "predictor" that do not change a mask (beyond float rounding)
NOT_RESULT_CHANGING = frozenset({"device"})


def setting_differences(stored: dict[str, Any], current: dict[str, Any], *, same_part: bool = True) -> list[str]:
    """``name: old -> new`` for each result-changing setting that differs (see the module docstring);
    ``same_part=False`` compares records of two parts of one split (model paths may differ)."""
    ignored = set(NOT_RESULT_CHANGING)
    both_weights = bool(stored.get("weights")) and bool(current.get("weights"))
    if not both_weights:
        ignored.add("weights")  # a record written before autocmr recorded weights: the path decides, as it did
    if both_weights or not same_part:
        ignored.add("model")
    names = sorted((set(stored) | set(current)) - ignored)
    return [f"{name}: {_shown(stored.get(name))} -> {_shown(current.get(name))}" for name in names
            if _comparable(name, stored.get(name)) != _comparable(name, current.get(name))]


def _comparable(name: str, value: Any) -> Any:
    if name == "model" and isinstance(value, str):  # one folder given as a relative and an absolute path
        return str(Path(value).expanduser().resolve())
    if name == "harmonise" and value is None:  # records written before autocmr recorded it: taken as the default
        return False
    return value


def _shown(value: Any) -> Any:
    if isinstance(value, dict) and value and all(isinstance(v, str) and len(v) == 64 for v in value.values()):
        return {k: v[:12] for k, v in value.items()}  # sha256s: enough to tell them apart
    return value


def input_listing(names: Iterable[str]) -> dict[str, Any]:
    """What a split into parts was dealt from: the number of cases found in the input and a digest of their
    names. Parts that found different inputs (studies added between two array tasks' starts) deal subjects
    differently, so some would fall in no part and others in two."""
    ordered = sorted(set(names))
    digest = hashlib.sha256("\n".join(ordered).encode("utf-8")).hexdigest()[:16]
    return {"cases": len(ordered), "digest": digest}


__all__ = ["NOT_RESULT_CHANGING", "input_listing", "setting_differences"]
