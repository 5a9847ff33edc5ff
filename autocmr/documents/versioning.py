"""Reading a versioned JSON document: one function that turns a missing, corrupt or unknown-version file into
a :class:`DocumentError` naming the file and what to do, instead of a KeyError deep inside a command."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autocmr.errors import DocumentError


def read_json_document(path: Path, *, kind: str, what_to_rerun: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``kind`` names the document in messages, ``what_to_rerun`` the fix."""
    if not path.is_file():
        raise DocumentError(f"{path}: {kind} not found; {what_to_rerun}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DocumentError(f"{path}: {kind} is not valid JSON ({exc}); {what_to_rerun}") from exc
    if not isinstance(data, dict):
        raise DocumentError(f"{path}: {kind} must be a JSON object, got {type(data).__name__}; {what_to_rerun}")
    return data


def check_version(path: Path | str, found: Any, *, kind: str, supported: tuple[int, ...],
                  what_to_rerun: str) -> int:
    """``found`` as an int when it is one of the ``supported`` versions, else a clear error."""
    if not isinstance(found, int) or found not in supported:
        newest = max(supported)
        hint = ("it was written by a newer autocmr; upgrade autocmr" if isinstance(found, int) and found > newest
                else what_to_rerun)
        raise DocumentError(f"{path}: {kind} has schema version {found!r}, this autocmr reads "
                            f"{', '.join(map(str, supported))}; {hint}")
    return found
