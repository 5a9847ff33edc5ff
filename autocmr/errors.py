"""Exceptions raised by autocmr. Every message names the file or value at fault and what was expected."""
from __future__ import annotations

from pathlib import Path


class AutocmrError(Exception):
    """Base class for all errors autocmr raises on purpose."""


class InputFileError(AutocmrError):
    """A file given to autocmr cannot be used (unreadable, wrong shape, bad values...)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across worker processes (the default would pass one argument)
        return (type(self), (self.path, self.reason))


class DatasetError(AutocmrError):
    """A dataset folder is missing, ambiguous or malformed."""


class PlansError(AutocmrError):
    """Plans or fingerprint files are missing, of an unknown version, or inconsistent with a model."""


class ConfigurationError(AutocmrError):
    """An option or a combination of options is invalid."""
