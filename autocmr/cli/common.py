"""Shared pieces of the command-line entry points: data-root flags, logging, error reporting."""
from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Callable


def add_root_flags(parser: argparse.ArgumentParser, *which: str) -> None:
    """``--raw``/``--preprocessed``/``--results``: override $AUTOCMR_RAW etc. (default under $AUTOCMR_HOME,
    itself ~/autocmr_data)."""
    for name in which:
        parser.add_argument(f"--{name}", default=None, metavar="DIR",
                            help=f"{name} data root (default: $AUTOCMR_{name.upper()}, else $AUTOCMR_HOME/{name})")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (a seed, a count), refused at parse time otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def positive_finite(text: str) -> float:
    """An argparse type: a finite number > 0 (minutes, seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def roots_from(args: argparse.Namespace):
    from autocmr.settings import resolve_roots

    return resolve_roots(raw=getattr(args, "raw", None), preprocessed=getattr(args, "preprocessed", None),
                         results=getattr(args, "results", None))


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("numexpr", "matplotlib", "PIL", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


RERUN = "rerun the same command to continue where it stopped"
INTERNAL_ERROR = 3  # exit status of an unexpected exception
RERUN_WITH_CONTINUE = "rerun the same command with --continue to resume where it stopped"


def run_command(fn: Callable[[], int], *, on_interrupt: str = RERUN) -> int:
    """Run ``fn``; autocmr's own errors (and the filesystem's) become ``error: message`` on stderr and exit code
    2, Ctrl-C 130, any other exception a logged traceback and :data:`INTERNAL_ERROR`. ``on_interrupt``: what to
    tell the user after Ctrl-C (commands that start over unless given --continue say so)."""
    from autocmr.errors import AutocmrError

    try:
        return fn()
    except AutocmrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the filesystem said no (disk full, permission, a file where a folder should be)
        logging.getLogger(__name__).debug("", exc_info=True)  # the traceback with -v
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {on_interrupt}", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug, not a failed case: its own status, so 1 keeps meaning "cases failed"
        logging.getLogger(__name__).error("unexpected error (a bug in autocmr or a library; please report it with "
                                          "this traceback):", exc_info=True)
        return INTERNAL_ERROR


def os_error_text(exc: OSError) -> str:
    """``PATH: what the file system said (what that means here)``, not Python's ``[Errno 2] ...: 'PATH'``: the
    path first, as every other autocmr error names its file."""
    if exc.filename is None:
        return str(exc)
    meaning = {errno.ENOTDIR: "a part of the path is a file, not a folder",
               errno.EACCES: "no permission", errno.EPERM: "not permitted",
               errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full"}.get(exc.errno or 0)
    return f"{exc.filename}: {exc.strerror or exc}" + (f" ({meaning})" if meaning else "")


def apply_device_settings(device: str) -> None:
    """The process-wide device settings of the commands that train or predict: keep freed heap memory in the
    process when the work runs on the CPU (``autocmr.allocator``: ~15 % faster CPU steps), and make ``cuda:N``
    the current GPU (otherwise CUDA's context and pinned memory land on GPU 0 as well). Process-wide side
    effects, so only entry points apply them; Python API users call :func:`autocmr.allocator.keep_freed_memory`
    and :func:`autocmr.device.make_current` themselves."""
    from autocmr.allocator import keep_freed_memory
    from autocmr.device import make_current, resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cpu":
        keep_freed_memory()
    make_current(resolved)
