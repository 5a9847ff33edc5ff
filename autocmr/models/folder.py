"""A trained model folder: self-contained (plans, dataset.json, fingerprint, folds' checkpoints).

Layout: ``<results>/<dataset>/<plans_name>__<configuration>/`` holding ``model.json`` (the manifest),
``plans.json``, ``dataset.json``, ``fingerprint.json``, ``splits.json`` and
``fold_N/checkpoint_{final,best,latest}.pth`` (file names: :mod:`autocmr.documents.layout`). Copy the folder
to another machine and predict with ``autocmr_predict -m FOLDER``. Checkpoints are checked against the
manifest's sha256 and read with ``weights_only=True``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from autocmr.dataset.naming import resolve_dataset_name
from autocmr.dataset.raw import DatasetJson
from autocmr.documents import layout
from autocmr.documents.checkpoint import HEADER_KEYS, load_checkpoint
from autocmr.documents.manifest import (ModelManifest, verify_documents, verify_weight_file,
                                       verify_weight_listing)
from autocmr.errors import DocumentError, PlansError
from autocmr.models.registry import is_installed, resolve_model
from autocmr.networks.unet import GenericUNet, build_network
from autocmr.planners.plans import Configuration, Plans
from autocmr.settings import Roots

PLANS_JSON = layout.PLANS
CHECKPOINTS = layout.CHECKPOINT_KINDS


def model_folder_name(plans_name: str, configuration: str) -> str:
    return f"{plans_name}__{configuration}"


def model_folder(roots: Roots, dataset: str | int, plans_name: str, configuration: str) -> Path:
    name = resolve_dataset_name(dataset, roots.results, roots.preprocessed, roots.raw)
    return roots.results / name / model_folder_name(plans_name, configuration)


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    plans: Plans
    configuration: Configuration
    dataset_json: DatasetJson
    manifest: ModelManifest | None = field(default=None, compare=False)
    # imported with autocmr_models: a finished model even when its manifest, from an export made before document
    # checksums, looks like a training folder's (weights only); its weight files must be exactly those listed
    installed: bool = field(default=False, compare=False)

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        """Open a model folder, or a model by name (``default``, or one imported with ``autocmr_models``)."""
        path = resolve_model(path)
        if not (path / PLANS_JSON).is_file():
            raise PlansError(f"{path}: not a model folder (no {PLANS_JSON}); train one with autocmr_train or "
                             "give the folder that contains plans.json and fold_N/")
        manifest = ModelManifest.load(path)
        verify_documents(path, manifest)  # a packed or imported model: an edited plans.json changes every mask
        plans = Plans.load(path / PLANS_JSON)
        cname = manifest.configuration if manifest is not None else path.name.split("__")[-1]
        return cls(path, plans, plans.configuration(cname), DatasetJson.load(path / layout.DATASET), manifest,
                   is_installed(path))

    def available_folds(self, checkpoint: str = "final") -> list[str]:
        """The folds with a ``checkpoint`` on disk; for a packed, exported or imported model, DocumentError when
        those on disk are not the ones its manifest lists (the ensemble would silently differ)."""
        verify_weight_listing(self.path, self.manifest, installed=self.installed)
        prefix = len(layout.FOLD_PREFIX)
        return sorted(p.parent.name[prefix:] for p in self.path.glob(f"{layout.FOLD_PREFIX}*/"
                                                                      f"{layout.checkpoint_name(checkpoint)}"))

    def checkpoint_path(self, fold: str, checkpoint: str = "final") -> Path:
        if checkpoint not in CHECKPOINTS:
            raise PlansError(f"unknown checkpoint {checkpoint!r}; valid: {list(CHECKPOINTS)}")
        return self.path / layout.checkpoint_relpath(fold, checkpoint)

    def load_networks(self, folds: Sequence[str] | None, checkpoint: str, device: torch.device) -> list[GenericUNet]:
        return [network for network, _ in self.load_networks_and_headers(folds, checkpoint, device)]

    def load_networks_and_headers(self, folds: Sequence[str] | None, checkpoint: str, device: torch.device
                                  ) -> list[tuple[GenericUNet, dict[str, Any]]]:
        """Each fold's network with its checkpoint's header (:data:`~autocmr.documents.checkpoint.HEADER_KEYS`:
        the options it was trained with among them)."""
        verify_weight_listing(self.path, self.manifest, installed=self.installed)  # also when the folds are named
        folds = list(folds) if folds else self.available_folds(checkpoint)
        if not folds:
            hint = ("train a fold first (or use --checkpoint latest for an unfinished run)" if checkpoint != "latest"
                    else "a finished or exported model keeps checkpoint_final.pth: use --checkpoint final")
            raise PlansError(f"{self.path}: no fold has a checkpoint_{checkpoint}.pth; {hint}")
        return [self._load(self.checkpoint_path(str(f), checkpoint), device) for f in folds]

    def _load(self, path: Path, device: torch.device) -> tuple[GenericUNet, dict[str, Any]]:
        if not path.is_file():
            raise PlansError(f"{path}: checkpoint not found; available folds: {self.available_folds()}")
        state = self.load_checkpoint(path)
        network = build_network(self.configuration.topology, self.configuration.input_channels(self.plans_channels()),
                                self.num_classes())
        try:
            network.load_state_dict(state["network"])
        except (RuntimeError, KeyError) as exc:
            raise PlansError(f"{path}: checkpoint does not match the network described by {self.path / PLANS_JSON} "
                             f"({str(exc).splitlines()[0]})") from exc
        return network.to(device).eval(), {k: state[k] for k in HEADER_KEYS if k in state}

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint of this folder, verified against the manifest's sha256 and read without running code."""
        if not path.is_file():
            raise PlansError(f"{path}: checkpoint not found; available folds: {self.available_folds()}")
        # read once: a file replaced between the check and the load (another import's --replace) is never loaded
        content = path.read_bytes()
        verify_weight_file(self.path, self.manifest, path.relative_to(self.path).as_posix(), content)
        return load_checkpoint(path, content)

    def plans_channels(self) -> int:
        return len(self.plans.channel_names)

    def num_classes(self) -> int:
        return len(self.plans.labels)

    def read_json(self, name: str, default: Any = None) -> Any:
        """A JSON document of the folder (``default`` when absent); unreadable: DocumentError naming it."""
        p = self.path / name
        if not p.is_file():
            return default
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DocumentError(f"{p}: cannot read this model document ({exc}); copy the model folder again from "
                                "its source") from exc


@dataclass(frozen=True)
class ModelSpec:
    """A model chosen by dataset and configuration, found under the results root (flag > env > default)."""

    dataset: str | int
    configuration: str
    plans: str | None = None  # default: autocmrPlans_cpu on the CPU when that model exists, else autocmrPlans
    results: str | Path | None = None

    def resolve(self, device: str = "auto") -> Path:
        from autocmr.device import resolve_device
        from autocmr.documents.plans import CPU_PLANS_NAME, default_plans_name
        from autocmr.settings import resolve_roots

        roots = resolve_roots(results=self.results)
        if self.plans:
            path = model_folder(roots, self.dataset, self.plans, self.configuration)
        else:
            cpu_exists = model_folder(roots, self.dataset, CPU_PLANS_NAME, self.configuration).is_dir()
            name = default_plans_name(resolve_device(device).type, cpu_plans_exist=cpu_exists)
            path = model_folder(roots, self.dataset, name, self.configuration)
        if not path.is_dir():
            found = sorted(p.name for p in path.parent.glob("*__*") if p.is_dir()) if path.parent.is_dir() else []
            this = [name for name in found if name.endswith(f"__{self.configuration}")]
            if not self.plans and len(this) == 1:  # e.g. a fine-tuned model's plans (autocmrPlans_from_Dataset101)
                return path.parent / this[0]
            hint = (f"give its plans with -p (-p {this[0].rsplit('__', 1)[0]})" if this
                    else "train one with autocmr_train, or give a model folder with -m")
            raise PlansError(f"no trained model at {path}; models of this dataset: {found or 'none'} ({hint})")
        return path
