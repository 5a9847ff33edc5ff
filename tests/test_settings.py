"""autocmr.settings: flag > environment variable > default under $AUTOCMR_HOME, resolved when asked."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from autocmr import settings
from autocmr.settings import default_model_override, resolve_models_dir, resolve_roots

ROOT_VARS = ("AUTOCMR_RAW", "AUTOCMR_PREPROCESSED", "AUTOCMR_RESULTS", "AUTOCMR_MODELS", "AUTOCMR_DEFAULT_MODEL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ROOT_VARS + ("AUTOCMR_HOME",):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_defaults_live_under_home_which_defaults_to_autocmr_data(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("HOME", str(tmp_path))
    roots = resolve_roots()
    assert roots.raw == (tmp_path / "autocmr_data" / "raw").resolve()
    assert roots.preprocessed.name == "preprocessed" and roots.results.name == "results"
    assert resolve_models_dir() == (tmp_path / "autocmr_data" / "models").resolve()


def test_environment_overrides_defaults_and_flags_override_environment(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("AUTOCMR_HOME", str(tmp_path / "home"))
    clean_env.setenv("AUTOCMR_RAW", str(tmp_path / "env_raw"))
    roots = resolve_roots(results=tmp_path / "flag_results")
    assert roots.raw == (tmp_path / "env_raw").resolve()  # env var
    assert roots.preprocessed == (tmp_path / "home" / "preprocessed").resolve()  # default under home
    assert roots.results == (tmp_path / "flag_results").resolve()  # flag
    assert resolve_roots(raw=tmp_path / "flag_raw").raw == (tmp_path / "flag_raw").resolve()


def test_empty_variables_count_as_unset(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("AUTOCMR_HOME", str(tmp_path))
    clean_env.setenv("AUTOCMR_RESULTS", "")
    assert resolve_roots().results == tmp_path.resolve() / "results"


def test_paths_are_absolute_with_user_expanded(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("HOME", str(tmp_path))
    clean_env.setenv("AUTOCMR_MODELS", "~/my_models")
    assert resolve_models_dir() == (tmp_path / "my_models").resolve()
    assert resolve_roots(raw="relative/raw").raw.is_absolute()


def test_default_model_override(clean_env, tmp_path: Path) -> None:
    assert default_model_override() is None
    clean_env.setenv("AUTOCMR_DEFAULT_MODEL", str(tmp_path / "model"))
    assert default_model_override() == (tmp_path / "model").resolve()


def test_nothing_is_read_at_import_time(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("AUTOCMR_HOME", str(tmp_path / "before"))
    importlib.reload(settings)
    clean_env.setenv("AUTOCMR_HOME", str(tmp_path / "after"))
    assert settings.resolve_roots().raw == (tmp_path / "after" / "raw").resolve()
