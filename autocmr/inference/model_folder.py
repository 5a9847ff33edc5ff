"""A trained model folder: self-contained (plans, dataset.json, fingerprint, folds' checkpoints).

Layout: ``<results>/<dataset>/<plans_name>__<configuration>/`` holding ``plans.json``, ``dataset.json``,
``fingerprint.json``, ``splits.json`` and ``fold_N/checkpoint_{final,best,latest}.pth``. Copy the folder
to another machine and predict with ``autocmr_predict -m FOLDER``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from autocmr.dataset.naming import resolve_dataset_name
from autocmr.dataset.raw import DatasetJson
from autocmr.errors import PlansError
from autocmr.networks.unet import GenericUNet, build_network
from autocmr.planners.plans import Configuration, Plans
from autocmr.settings import Roots

PLANS_JSON = "plans.json"
CHECKPOINTS = ("final", "best", "latest")


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

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        path = Path(path)
        if not (path / PLANS_JSON).is_file():
            raise PlansError(f"{path}: not a model folder (no {PLANS_JSON}); train one with autocmr_train or "
                             "give the folder that contains plans.json and fold_N/")
        plans = Plans.load(path / PLANS_JSON)
        meta = json.loads((path / "model.json").read_text()) if (path / "model.json").is_file() else {}
        cname = meta.get("configuration") or path.name.split("__")[-1]
        return cls(path, plans, plans.configuration(cname), DatasetJson.load(path / "dataset.json"))

    def available_folds(self, checkpoint: str = "final") -> list[str]:
        return sorted(p.parent.name[5:] for p in self.path.glob(f"fold_*/checkpoint_{checkpoint}.pth"))

    def checkpoint_path(self, fold: str, checkpoint: str = "final") -> Path:
        if checkpoint not in CHECKPOINTS:
            raise PlansError(f"unknown checkpoint {checkpoint!r}; valid: {list(CHECKPOINTS)}")
        return self.path / f"fold_{fold}" / f"checkpoint_{checkpoint}.pth"

    def load_networks(self, folds: Sequence[str] | None, checkpoint: str, device: torch.device) -> list[GenericUNet]:
        folds = list(folds) if folds else self.available_folds(checkpoint)
        if not folds:
            raise PlansError(f"{self.path}: no fold has a checkpoint_{checkpoint}.pth; train a fold first "
                             "(or use --checkpoint latest for an unfinished run)")
        return [self._load(self.checkpoint_path(str(f), checkpoint), device) for f in folds]

    def _load(self, path: Path, device: torch.device) -> GenericUNet:
        if not path.is_file():
            raise PlansError(f"{path}: checkpoint not found; available folds: {self.available_folds()}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        network = build_network(self.configuration.topology, self.plans_channels(), self.num_classes())
        try:
            network.load_state_dict(state["network"])
        except (RuntimeError, KeyError) as exc:
            raise PlansError(f"{path}: checkpoint does not match the network described by {self.path / PLANS_JSON} "
                             f"({str(exc).splitlines()[0]})") from exc
        return network.to(device).eval()

    def plans_channels(self) -> int:
        return len(self.plans.channel_names)

    def num_classes(self) -> int:
        return len(self.plans.labels)

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else default


@dataclass(frozen=True)
class ModelSpec:
    """A model chosen by dataset and configuration, found under the results root (flag > env > default)."""

    dataset: str | int
    configuration: str
    plans: str | None = None  # default: autocmrPlans_cpu on the CPU when that model exists, else autocmrPlans
    results: str | Path | None = None

    def resolve(self, device: str = "auto") -> Path:
        from autocmr.device import resolve_device
        from autocmr.inference.model_folder import model_folder
        from autocmr.planners.plans import CPU_PLANS_NAME, DEFAULT_PLANS_NAME
        from autocmr.settings import resolve_roots

        roots = resolve_roots(results=self.results)
        if self.plans:
            path = model_folder(roots, self.dataset, self.plans, self.configuration)
        else:
            cpu = model_folder(roots, self.dataset, CPU_PLANS_NAME, self.configuration)
            on_cpu = resolve_device(device).type == "cpu"
            path = cpu if on_cpu and cpu.is_dir() else model_folder(roots, self.dataset, DEFAULT_PLANS_NAME,
                                                                     self.configuration)
        if not path.is_dir():
            found = sorted(p.name for p in path.parent.glob("*__*") if p.is_dir()) if path.parent.is_dir() else []
            raise PlansError(f"no trained model at {path}; models of this dataset: {found or 'none'} "
                             f"(train one with autocmr_train, or give a model folder with -m)")
        return path
