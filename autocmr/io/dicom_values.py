"""Numeric DICOM values read for placing images: one parser for top-level attributes and for the functional
groups of enhanced multi-frame files, so both refuse a broken value the same way, naming the file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from autocmr.errors import InputFileError


def numeric_tuple(path: Path, what: str, value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` (a multi-valued DS element) as ``n`` floats; None when absent. ``what`` names it in errors."""
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, f"{what} is not numeric: {value!r}") from exc
    if len(values) != n:
        raise InputFileError(path, f"{what} has {len(values)} values, expected {n}: {value!r}")
    return values


__all__ = ["numeric_tuple"]
