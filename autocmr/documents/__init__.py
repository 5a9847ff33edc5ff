"""Every document autocmr writes and reads back later, typed and versioned, with one table of file names.

* :mod:`~autocmr.documents.layout` — file names of model and run folders
* :mod:`~autocmr.documents.checkpoint` — checkpoint header and format (read with ``weights_only=True``)
* :mod:`~autocmr.documents.manifest` — model manifest (``model.json``: identity, sha256 of each weight file)
* :mod:`~autocmr.documents.run_options` — a training run's resolved options (``fold_N/options.json``)
* :mod:`~autocmr.documents.case_properties` — per-case properties of preprocessed images
* :mod:`~autocmr.documents.model_card` — what a model was trained on and how well it did
* :mod:`~autocmr.documents.plans` — plans (``autocmr.planners.plans`` re-exports them for old imports)
* fingerprint: still in :mod:`autocmr.planners.fingerprint`, reachable here as ``Fingerprint`` (imported on
  first use, so importing this package stays below every other layer).

An old version reads unchanged or fails with a message that says what to re-run; a newer one asks for a
newer autocmr.
"""
from __future__ import annotations

from typing import Any

_MOVED_LATER = {"Plans": "autocmr.documents.plans", "Fingerprint": "autocmr.planners.fingerprint"}


def __getattr__(name: str) -> Any:
    if name in _MOVED_LATER:
        import importlib

        return getattr(importlib.import_module(_MOVED_LATER[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
