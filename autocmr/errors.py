"""Exceptions raised by autocmr. Every message names the file or value at fault and what was expected."""
from __future__ import annotations

from pathlib import Path


class AutocmrError(Exception):
    """Base class for all errors autocmr raises on purpose."""


class _PathError(AutocmrError):
    """An error about one path: ``path: reason``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across worker processes (the default would pass one argument)
        return (type(self), (self.path, self.reason))


class InputFileError(_PathError):
    """A file given to autocmr cannot be used (unreadable, wrong shape, bad values...)."""


class OutputPathError(_PathError):
    """An output folder cannot be used (a file is in its place, it cannot be created or written to)."""


class DatasetError(AutocmrError):
    """A dataset folder is missing, ambiguous or malformed."""


class PlansError(AutocmrError):
    """Plans or fingerprint files are missing, of an unknown version, or inconsistent with a model."""


class ConfigurationError(AutocmrError):
    """An option or a combination of options is invalid."""


class DocumentError(PlansError):
    """A persisted document (checkpoint, model manifest, run options, case properties, model card) is missing,
    corrupt, modified since it was written, or of a version this autocmr cannot read."""


def no_folder(path: str | Path) -> str:
    """Why ``path`` is no folder to read, for messages: ``is a file`` (given where a folder belongs) or
    ``not found``."""
    return "is a file" if Path(path).exists() else "not found"


def exception_text(exc: BaseException, *, whole_message: bool = False) -> str:
    """How a failure is reported in failure lists and logs: ``Type: first line of the message`` (the type alone
    when there is no message); ``whole_message`` keeps every line instead of the first."""
    text = str(exc).strip()
    if not whole_message:
        text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
