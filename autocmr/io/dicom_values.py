"""DICOM values read for placing images (numbers) and for telling them apart (ImageType): one parser for
top-level attributes and for the functional groups of enhanced multi-frame files, so both refuse a broken value
the same way, naming the file."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from autocmr.errors import InputFileError

logger = logging.getLogger(__name__)


def _number(value: Any) -> float:
    """One DS/IS value as a float, a decimal comma ("8,00", written by some European exports) read as a point;
    TypeError or ValueError when it is not one number."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return float(text.strip().replace(",", ".") if isinstance(text, str) else text)


def numeric_tuple(path: Path, what: str, value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` (a multi-valued DS element) as ``n`` floats; None when absent. ``what`` names it in errors."""
    if value is None:
        return None
    try:
        values = tuple(_number(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, f"{what} is not numeric: {value!r}") from exc
    if len(values) != n:
        raise InputFileError(path, f"{what} has {len(values)} values, expected {n}: {value!r}")
    return values


def numeric_value(path: Path, what: str, value: Any, *, optional: bool = False) -> float | None:
    """``value`` (a DS or IS element) as a float; None when absent or empty.

    A value that is not one number (text, several values) raises InputFileError naming the file and the
    attribute, unless ``optional``: attributes autocmr can do without (a hint such as SliceThickness) are then
    ignored with a warning. A decimal comma reads as a point.
    """
    if value is None or value == "":
        return None
    try:
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):  # a list or a MultiValue
            raise TypeError("several values")
        return _number(value)
    except (TypeError, ValueError) as exc:
        if not optional:
            raise InputFileError(path, f"{what} is not a number: {value!r}") from exc
        logger.warning("%s: %s is not a number (%r); ignored", path, what, value)
        return None


def image_type(value: Any) -> tuple[str, ...]:
    """ImageType's (or FrameType's) values in upper case without padding; () when absent."""
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    return tuple((v.decode(errors="replace") if isinstance(v, bytes) else str(v)).strip().upper() for v in values)


__all__ = ["image_type", "numeric_tuple", "numeric_value"]
