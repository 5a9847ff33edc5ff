"""Where autocmr keeps its data: the raw, preprocessed and results roots.

Resolution order for each root: an explicit argument (a CLI flag) > its environment variable >
a default under ``$AUTOCMR_HOME`` (itself defaulting to ``~/autocmr_data``). Nothing is read at import
time, so ``import autocmr`` never fails because a variable is unset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "AUTOCMR_HOME"
ENV_RAW = "AUTOCMR_RAW"
ENV_PREPROCESSED = "AUTOCMR_PREPROCESSED"
ENV_RESULTS = "AUTOCMR_RESULTS"
ENV_MODELS = "AUTOCMR_MODELS"  # where `autocmr_models import` installs models (default $AUTOCMR_HOME/models)
ENV_DEFAULT_MODEL = "AUTOCMR_DEFAULT_MODEL"  # a model folder used instead of the packaged default model
DEFAULT_HOME = Path("~/autocmr_data")


@dataclass(frozen=True)
class Roots:
    """The three data roots, already resolved to absolute paths."""

    raw: Path
    preprocessed: Path
    results: Path


def _home() -> Path:
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve()


def _pick(explicit: str | Path | None, env_name: str, default_leaf: str) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env_value = os.environ.get(env_name)
    if env_value:
        return Path(env_value).expanduser().resolve()
    return _home() / default_leaf


def resolve_roots(
    raw: str | Path | None = None,
    preprocessed: str | Path | None = None,
    results: str | Path | None = None,
) -> Roots:
    """Resolve the data roots (flag > environment variable > default)."""
    return Roots(
        raw=_pick(raw, ENV_RAW, "raw"),
        preprocessed=_pick(preprocessed, ENV_PREPROCESSED, "preprocessed"),
        results=_pick(results, ENV_RESULTS, "results"),
    )


def resolve_models_dir(explicit: str | Path | None = None) -> Path:
    """Folder of imported models (flag > $AUTOCMR_MODELS > $AUTOCMR_HOME/models)."""
    return _pick(explicit, ENV_MODELS, "models")


def default_model_override() -> Path | None:
    """The model folder named by $AUTOCMR_DEFAULT_MODEL, used in place of the packaged default; None if unset."""
    value = os.environ.get(ENV_DEFAULT_MODEL)
    return Path(value).expanduser().resolve() if value else None
