"""When two runs into one output folder count as one batch: the settings their records must share, and the
list of inputs a split into parts was dealt from.

Two records describe one batch when every result-changing setting of ``Predictor.describe()`` (plus the cine
options) agrees. The device never counts (a batch continued on another device is still one batch). The model
counts by its weights where both records name their sha256 (copied between machines or mounted at another
path, a model folder is the same model); by its resolved path otherwise, within a part and across the parts
of a split alike: without checksums nothing else tells two models apart, so a model folder that has none
(one trained before ``model.json`` recorded them) must be at one path on every node of a cluster. The
checkpoint (``--checkpoint final|best|latest``) counts; a record written before autocmr recorded it is not
held to it. Precision counts everywhere: ``--precision auto`` picks bfloat16 on one CPU and float32 on
another, which changes masks; a mixed cluster passes ``--precision`` explicitly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

# Settings of predictions.json's "predictor" that do not change a mask (beyond float rounding)
NOT_RESULT_CHANGING = frozenset({"device"})
# Settings that records of older autocmr versions lack: compared only when both records have them
RECORDED_LATER = frozenset({"checkpoint"})


def setting_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: old -> new`` for each result-changing setting that differs (see the module docstring), between
    two runs of one part or two parts of one split."""
    ignored = set(NOT_RESULT_CHANGING)
    if bool(stored.get("weights")) and bool(current.get("weights")):
        ignored.add("model")  # the same weights at another path: the same model
    else:
        ignored.add("weights")  # a record written before autocmr recorded weights: the path decides, as it did
    ignored |= {name for name in RECORDED_LATER if name not in stored or name not in current}
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


def input_listing(jobs: Iterable[tuple[str, str]], problems: Iterable[str] = ()) -> dict[str, Any]:
    """What a split into parts was dealt from: the number of jobs found in the input and a digest of their
    (case name, subject) pairs, exactly what the parts are dealt over; the inputs that could not become jobs
    (``problems``, by name) are counted and digested apart. Parts that found different jobs (studies added
    between two array tasks' starts, a study still being copied when one task looked, another ``cases.csv``)
    deal subjects differently, so some would fall in no part and others in two."""
    pairs = sorted(set(jobs))
    names = sorted(set(problems))
    return {"cases": len(pairs), "digest": _digest([f"{name}\t{subject}" for name, subject in pairs]),
            "problems": len(names), "problems_digest": _digest(names)}


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


__all__ = ["NOT_RESULT_CHANGING", "RECORDED_LATER", "input_listing", "setting_differences"]
