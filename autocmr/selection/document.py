"""``selection.json``: the configuration chosen by cross-validation, and the figures it was chosen on.

Layout (schema version :data:`SCHEMA_VERSION`)::

    {"schema_version": 1, "kind": "autocmr_selection", "created": ISO time, "rank_by": "dice",
     "folds": ["0", ...], "n_cases": N, "checkpoint": "final",
     "chosen": {"name": "A+B", "members": [{"name", "model", "relative_model", "folds", "weights"}],
                "postprocessing": {"foreground_lcc", "per_label_lcc", "evidence"},
                "cv": FIGURES, "cv_postprocessed": FIGURES},
     "candidates": [{"name", "members": [...], "rank", "cv": FIGURES}, ...],     # best first
     "prediction": {"mirror", "step", "precision", "harmonise"}}   # the settings the figures were measured with

    FIGURES = {"dice_mean", "dice": {class: mean}, "hd95": {class: mean},
               "clinical": {measure: {"bias", "mean_abs_diff", "spearman_r", "n", "n_excluded"}}}

``model`` is the absolute path of a member's model folder when the selection was made; ``relative_model``
the same path relative to the folder holding ``selection.json``, tried first so that a results tree can be
moved or copied as a whole. ``weights``: checkpoint path in the model folder -> sha256 of the checkpoint files
the cross-validation scored (hashed from the files themselves, not taken from the manifest, which need not list
a ``--checkpoint latest`` or a fold retrained since). Applying the selection hashes the member's files again and
refuses a member folder whose files differ (retrained since, another model copied to that path), naming the
file, since the figures and postprocessing describe the weights they were measured on.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocmr.documents.layout import CHECKPOINT_KINDS, SELECTION, checkpoint_relpath
from autocmr.documents.manifest import sha256_of
from autocmr.errors import DocumentError
from autocmr.inference.postprocessing import PostprocessingDecision
from autocmr.io.atomic import write_json_atomic

SCHEMA_VERSION = 1
_FOLD = re.compile(r"[A-Za-z0-9_-]+")
KIND = "autocmr_selection"
SELECTION_JSON = SELECTION


@dataclass(frozen=True)
class Member:
    """One model of the chosen configuration: its folder and the folds whose networks are averaged."""

    name: str
    model: Path
    folds: tuple[str, ...]
    # checkpoint path in the model folder -> sha256 of the file scored (find_best); empty: hashed when saved
    weights: dict[str, str] = field(default_factory=dict, hash=False)

    def to_dict(self, base: Path, checkpoint: str = "final") -> dict[str, Any]:
        entry = {"name": self.name, "model": str(self.model.resolve()),
                 "relative_model": os.path.relpath(self.model.resolve(), base.resolve()), "folds": list(self.folds)}
        weights = self.weights or _file_weights(self.model, self.folds, checkpoint)
        return {**entry, "weights": dict(weights)} if weights else entry


def _file_weights(model: Path, folds: tuple[str, ...], checkpoint: str) -> dict[str, str]:
    """The sha256 of the member's checkpoint files as they are now (empty when one is missing): which weights
    the selection was made with, wherever the folder is found later."""
    files = {checkpoint_relpath(fold, checkpoint): model / checkpoint_relpath(fold, checkpoint) for fold in folds}
    if not files or not all(path.is_file() for path in files.values()):
        return {}
    return {rel: sha256_of(path) for rel, path in files.items()}


def _weights_mismatch(folder: Path, recorded: dict[str, str]) -> str | None:
    """Why ``folder`` does not hold the recorded weights (the first checkpoint file that is missing or differs),
    or None when every recorded file has its recorded sha256."""
    for rel, digest in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            return f"{path} is missing"
        actual = sha256_of(path)
        if actual != digest:
            return f"{path} has sha256 {actual[:12]}..., not the {str(digest)[:12]}... the selection was scored with"
    return None


# the prediction settings the cross-validation figures were measured with (checkpoint aside: it is a field)
PREDICTION_SETTINGS = ("mirror", "step", "precision", "harmonise")


def prediction_settings(options: Any) -> dict[str, Any]:
    """``options``' (a :class:`~autocmr.inference.predictor.PredictorOptions`) settings that change predictions."""
    return {name: getattr(options, name) for name in PREDICTION_SETTINGS}


@dataclass(frozen=True)
class Selection:
    """The content of ``selection.json`` (see the module docstring)."""

    members: tuple[Member, ...]
    postprocessing: PostprocessingDecision
    rank_by: str
    checkpoint: str = "final"
    record: dict[str, Any] = field(default_factory=dict)  # everything else of the file (figures, candidates)

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.members)

    def settings_differences(self, options: Any) -> list[str]:
        """``"name: chosen with -> now"`` for each prediction setting of ``options`` that differs from those the
        selection's figures were measured with (empty for a selection that did not record them)."""
        chosen = self.record.get("prediction")
        if not isinstance(chosen, dict):
            return []
        now = prediction_settings(options)
        return [f"{name}: {chosen[name]!r} -> {now[name]!r}" for name in PREDICTION_SETTINGS
                if name in chosen and chosen[name] != now[name]]

    def save(self, path: Path) -> None:
        chosen = dict(self.record.get("chosen", {}))
        chosen.update(name=self.name, members=[m.to_dict(path.parent, self.checkpoint) for m in self.members],
                      postprocessing={"foreground_lcc": self.postprocessing.foreground_lcc,
                                      "per_label_lcc": list(self.postprocessing.per_label_lcc),
                                      "evidence": self.postprocessing.evidence})
        document = {"schema_version": SCHEMA_VERSION, "kind": KIND, **self.record, "rank_by": self.rank_by,
                    "checkpoint": self.checkpoint, "chosen": chosen}
        write_json_atomic(path, document)

    @classmethod
    def load(cls, path: str | Path) -> "Selection":
        path = Path(path)
        if path.is_dir():
            path = path / SELECTION_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DocumentError(f"{path}: cannot read the selection ({exc}); make one with autocmr_find_best") from exc
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise DocumentError(f"{path}: not an autocmr selection (no \"kind\": \"{KIND}\")")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DocumentError(f"{path}: selection schema version {data.get('schema_version')!r}; this autocmr "
                                f"reads version {SCHEMA_VERSION}: run autocmr_find_best again")
        checkpoint = data.get("checkpoint", "final")
        if checkpoint not in CHECKPOINT_KINDS:  # it is joined to model folders: never a path
            raise DocumentError(f"{path}: malformed selection, 'checkpoint' is {checkpoint!r}, not one of "
                                f"{list(CHECKPOINT_KINDS)}")
        try:
            chosen = data["chosen"]
            if not isinstance(chosen, dict) or not isinstance(chosen["members"], list):
                raise DocumentError(f"{path}: malformed selection, 'chosen' must be an object with a list of "
                                    "'members'")
            members = tuple(_member(path, m) for m in chosen["members"])
            decision = PostprocessingDecision.from_dict(chosen.get("postprocessing", {}),
                                                        source=f"{path}: chosen postprocessing")
        except KeyError as exc:
            raise DocumentError(f"{path}: malformed selection, missing {exc}") from exc
        if not members:
            raise DocumentError(f"{path}: the selection names no model")
        record = {k: v for k, v in data.items() if k not in ("schema_version", "kind", "rank_by", "checkpoint")}
        return cls(members, decision, str(data.get("rank_by", "dice")), checkpoint, record)


def _member(selection_path: Path, entry: Any) -> Member:
    """One member of the chosen configuration, each field checked: a string where the list of folds belongs
    would be read as one fold per character (``"01"``: folds 0 and 1)."""
    if not isinstance(entry, dict):
        raise DocumentError(f"{selection_path}: malformed selection, a member is {entry!r}, not an object")
    name, folds = entry["name"], entry["folds"]
    paths = [entry["model"], entry.get("relative_model") or ""]
    if not isinstance(name, str) or not all(isinstance(p, str) for p in paths):
        raise DocumentError(f"{selection_path}: malformed selection, a member's 'name', 'model' and "
                            f"'relative_model' must be strings, not {name!r}, {paths[0]!r} and {paths[1]!r}")
    if not isinstance(folds, list) or not folds or not all(_is_fold(f) for f in folds):
        raise DocumentError(f"{selection_path}: malformed selection, 'folds' of model {name!r} must be a list of "
                            f"folds (e.g. [\"0\", \"1\"]), not {folds!r}")
    return Member(name, _member_path(selection_path, entry), tuple(str(f) for f in folds),
                  dict(entry.get("weights") or {}))


def _is_fold(value: Any) -> bool:
    """A fold's name (``0``, ``"0"``, ``"all"``): it becomes a folder name, so never a path."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and _FOLD.fullmatch(value) is not None)


def _member_path(selection_path: Path, member: dict[str, Any]) -> Path:
    """The member's model folder: where its relative path from the selection points (a results tree moved as a
    whole), else its absolute path; with recorded weights (selections made since they were recorded), the
    first of the two whose checkpoint files are those very weights."""
    candidates = [Path(member["model"])]
    if member.get("relative_model"):
        candidates.insert(0, selection_path.parent / member["relative_model"])
    found = list(dict.fromkeys(c.resolve() for c in candidates if c.is_dir()))
    if not found:
        raise DocumentError(f"{selection_path}: model {member.get('name')!r} not found at "
                            f"{' nor at '.join(str(c) for c in candidates)}")
    recorded = member.get("weights")
    if not recorded:
        return found[0]
    if not isinstance(recorded, dict):
        raise DocumentError(f"{selection_path}: malformed selection, weights of model {member.get('name')!r} are "
                            "not a mapping of checkpoint files to sha256")
    first_problem = None
    for folder in found:
        problem = _weights_mismatch(folder, recorded)
        if problem is None:
            return folder
        first_problem = first_problem or problem
    raise DocumentError(f"{selection_path}: model {member.get('name')!r}: {first_problem} (retrained since, or another "
                        "model at that path); the selection's cross-validation figures and postprocessing do not "
                        "describe these weights: run autocmr_find_best again")


__all__ = ["Member", "SELECTION_JSON", "SCHEMA_VERSION", "Selection"]
