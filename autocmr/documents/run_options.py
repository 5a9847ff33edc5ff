"""The run-options document (``fold_N/options.json``): the fully resolved options of a training run, the hash
of those that change its result, the device it ran on, the precision its ``precision`` option resolved to
there, the fold's cases (counts and a hash of their ids), and the changes accepted on resume.

Version 1 (before this document) had the same keys without ``schema_version``; its digest covered every
option, so it is recomputed, never compared, when a run is resumed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autocmr.documents.versioning import check_version, read_json_document
from autocmr.errors import DocumentError
from autocmr.io.atomic import write_json_atomic

RUN_OPTIONS_SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1
_RERUN = "start the run again without --continue"


@dataclass(frozen=True)
class RunOptionsDocument:
    options: dict[str, Any]
    digest: str
    device: str
    # "epochs: 10 -> 20 (resumed after 4 finished epoch(s))"
    changes_on_resume: list[str] = field(default_factory=list)
    schema_version: int = RUN_OPTIONS_SCHEMA_VERSION
    precision: str = ""  # fp32, bf16 or fp16 ("": written before it was recorded)
    cases: dict[str, Any] | None = None  # {"train": 32, "val": 8, "sha256": ...} (None: not recorded)

    def save(self, path: Path) -> None:
        write_json_atomic(path, {**asdict(self), "schema_version": RUN_OPTIONS_SCHEMA_VERSION})

    @classmethod
    def load(cls, path: Path) -> "RunOptionsDocument":
        data = read_json_document(path, kind="run options", what_to_rerun=_RERUN)
        version = check_version(path, data.get("schema_version", LEGACY_SCHEMA_VERSION), kind="run options",
                                supported=(LEGACY_SCHEMA_VERSION, RUN_OPTIONS_SCHEMA_VERSION), what_to_rerun=_RERUN)
        options = data.get("options")
        if not isinstance(options, dict):
            raise DocumentError(f"{path}: run options lack the 'options' object; {_RERUN}")
        cases = data.get("cases")
        return cls(options, str(data.get("digest", "")), str(data.get("device", "")),
                   list(data.get("changes_on_resume") or []), version, str(data.get("precision") or ""),
                   cases if isinstance(cases, dict) else None)
