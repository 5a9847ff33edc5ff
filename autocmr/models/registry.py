"""Finding a model by name: ``default`` (the model shipped inside the package), a model imported with
``autocmr_models import`` (under the models folder), or a model folder given by its path.

The packaged default lives in ``autocmr/pretrained/default/`` (package data). ``$AUTOCMR_DEFAULT_MODEL``
names another folder to use as the default (tests point it at a small phantom model); it is only a default
and never required.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from autocmr.documents import layout
from autocmr.documents.manifest import ModelManifest
from autocmr.errors import AutocmrError, PlansError, exception_text
from autocmr.io.atomic import TEMP_PREFIX
from autocmr.settings import default_model_override, resolve_models_dir

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "default"
PACKAGED_MODELS_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def packaged_default_model() -> Path:
    return PACKAGED_MODELS_DIR / DEFAULT_MODEL_NAME


def is_model_folder(path: Path) -> bool:
    return (path / layout.PLANS).is_file()


# The lock file of a models folder (:func:`autocmr.models.store.models_lock`): every import takes it, so it
# marks the folder whose subfolders are installed models, whatever --models-dir named it.
MODELS_LOCK = ".autocmr_models.lock"


def is_installed(path: Path) -> bool:
    """Whether ``path`` is a model ``autocmr_models import`` installed (a folder of a models folder): a finished
    model, never trained into, whatever its manifest records (one exported before document checksums lists
    only its weights, like a training folder's)."""
    parent = path.resolve().parent
    return (parent / MODELS_LOCK).is_file() or parent == resolve_models_dir().resolve()


def default_model() -> Path:
    """The default model's folder: $AUTOCMR_DEFAULT_MODEL when set, else the packaged one."""
    override = default_model_override()
    folder = override or packaged_default_model()
    if not is_model_folder(folder):
        where = f"$AUTOCMR_DEFAULT_MODEL ({folder})" if override else f"the package ({folder})"
        raise PlansError(f"no default model in {where}: no {layout.PLANS} there. Give a model with -m FOLDER or "
                         "-d DATASET -c CONFIGURATION, or install one with `autocmr_models import ARCHIVE`")
    return folder


def resolve_model(reference: str | Path | None, *, models_dir: str | Path | None = None) -> Path:
    """A model folder from ``reference``: None or ``default``, an existing folder, or an imported model's name."""
    if reference is None or str(reference) == DEFAULT_MODEL_NAME:
        return default_model()
    path = Path(reference).expanduser()
    # a bare name (no separator) is an installed model's unless a model folder of that name is here; a path
    # with a separator (./site_x, models/site_x) is always a folder
    bare = os.sep not in str(reference) and "/" not in str(reference) and len(path.parts) == 1
    imported = resolve_models_dir(models_dir) / path.name if bare else None
    if path.exists() and (not bare or is_model_folder(path) or imported is None or not imported.is_dir()):
        if bare and imported is not None and imported.is_dir():
            logger.warning("-m %s: the model folder %s is used; an installed model has the same name (%s): give "
                           "./%s or rename one of them", reference, path.resolve(), imported, reference)
        return path
    if not bare:
        raise PlansError(f"{path}: model folder not found")
    if imported is not None and not imported.exists():
        from autocmr.models.store import restore_interrupted_swap

        restore_interrupted_swap(imported)  # an import --replace killed mid-swap
    if imported is not None and imported.is_dir():
        return imported
    names = [m.name for m in list_models(models_dir)]
    raise PlansError(f"{str(reference)!r} is neither a model folder nor the name of an installed model; installed: "
                     f"{names or 'none'} (install one with `autocmr_models import ARCHIVE`)")


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    manifest: ModelManifest | None
    folds: tuple[str, ...]
    error: str | None = None  # why its manifest cannot be read (a newer autocmr's, corrupt); listed all the same


def _describe(name: str, path: Path) -> InstalledModel:
    folds = tuple(sorted(p.parent.name[len(layout.FOLD_PREFIX):]
                         for p in path.glob(f"{layout.FOLD_PREFIX}*/{layout.checkpoint_name('final')}")))
    try:
        return InstalledModel(name, path, ModelManifest.load(path), folds)
    except AutocmrError as exc:  # one unreadable model must not hide the others from `autocmr_models list`
        return InstalledModel(name, path, None, folds, str(exc))
    except Exception as exc:  # noqa: BLE001 - nor may a failure no check foresaw: it is shown with its type
        return InstalledModel(name, path, None, folds, exception_text(exc))


def list_models(models_dir: str | Path | None = None) -> list[InstalledModel]:
    """The default model (when there is one) and every model under the models folder, sorted by name."""
    found = []
    try:
        found.append(_describe(DEFAULT_MODEL_NAME, default_model()))
    except PlansError:
        pass  # no default installed: nothing to list for it
    root = resolve_models_dir(models_dir)
    if root.is_dir():
        found += [_describe(p.name, p) for p in sorted(root.iterdir())
                  if p.is_dir() and not p.name.startswith(TEMP_PREFIX) and is_model_folder(p)]  # not a half import
    return found
