"""autocmr.errors.exception_text: the one way a failure becomes a line in a report."""
from __future__ import annotations

from autocmr.errors import InputFileError, exception_text


def test_type_and_first_line() -> None:
    assert exception_text(ValueError("bad value\n  at line 3")) == "ValueError: bad value"
    assert exception_text(RuntimeError("\n\n  ITK said no  \nmore")) == "RuntimeError: ITK said no"


def test_whole_message_keeps_every_line() -> None:
    assert exception_text(ValueError("a\nb"), whole_message=True) == "ValueError: a\nb"


def test_no_message_gives_the_type_alone() -> None:
    assert exception_text(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert exception_text(ValueError("   ")) == "ValueError"


def test_input_file_error_names_the_file() -> None:
    assert exception_text(InputFileError("/data/a.nii.gz", "empty")) == "InputFileError: /data/a.nii.gz: empty"
