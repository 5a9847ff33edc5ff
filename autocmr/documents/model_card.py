"""The model card (``model_card.json``): what a model was trained on, how, how well it did in
cross-validation, what it is for and what it is not for. ``autocmr_models info`` renders it as text."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autocmr.documents.layout import MODEL_CARD
from autocmr.documents.versioning import check_version, read_json_document
from autocmr.errors import DocumentError
from autocmr.io.atomic import write_json_atomic

MODEL_CARD_SCHEMA_VERSION = 1
_RERUN = "write it again with `autocmr_models pack ... --card`"


@dataclass(frozen=True)
class ModelCard:
    """Free-text fields are for people; ``cross_validation`` holds the figures (per class Dice/HD95 means,
    clinical agreement) as the evaluation summary reports them."""

    name: str
    task: str = "short-axis cine MR segmentation"
    labels: dict[str, int] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)  # dataset, subjects, cases, groups, source
    training: dict[str, Any] = field(default_factory=dict)  # configuration, folds, budget, recipe, commit
    cross_validation: dict[str, Any] = field(default_factory=dict)  # {"classes": {...}, "clinical": {...}}
    # the same figures on other test sets (scanner change, another vendor): {"source": ..., "test_sets": {...}}
    domains: dict[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    limits: list[str] = field(default_factory=list)
    data_licence: str = ""
    schema_version: int = MODEL_CARD_SCHEMA_VERSION

    def save(self, folder: Path) -> None:
        write_json_atomic(folder / MODEL_CARD, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> "ModelCard | None":
        path = folder / MODEL_CARD
        if not path.exists():
            return None
        data = read_json_document(path, kind="model card", what_to_rerun=_RERUN)
        check_version(path, data.get("schema_version"), kind="model card", supported=(MODEL_CARD_SCHEMA_VERSION,),
                      what_to_rerun=_RERUN)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:  # a required field missing: a damaged or hand-written card
            raise DocumentError(f"{path}: malformed model card ({exc})") from exc

    def render(self) -> str:
        lines = [f"# {self.name}", f"task: {self.task}",
                 "labels: " + ", ".join(f"{v} {k}" for k, v in sorted(self.labels.items(), key=lambda kv: kv[1]))]
        lines += _section("training data", self.training_data) + _section("training", self.training)
        lines += _cv_lines(self.cross_validation) + _domain_lines(self.domains)
        if self.intended_use:
            lines += ["", "intended use: " + self.intended_use]
        if self.limits:
            lines += ["", "known limits:"] + [f"  - {item}" for item in self.limits]
        if self.data_licence:
            lines += ["", "training data terms: " + self.data_licence]
        return "\n".join(lines)


def _section(title: str, values: dict[str, Any]) -> list[str]:
    if not values:
        return []
    return ["", f"{title}:"] + [f"  {key}: {value}" for key, value in values.items()]


def _fmt(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cv_lines(cv: dict[str, Any]) -> list[str]:
    if not cv:
        return ["", "cross-validation: no figures recorded for this model"]
    lines = ["", f"cross-validation ({cv.get('source', 'fold validations')}):", "  class  Dice    HD95 (mm)"]
    for name, stats in (cv.get("classes") or {}).items():
        lines.append(f"  {name:<6} {_fmt(stats.get('dice'), 3):<7} {_fmt(stats.get('hd95'), 2)}")
    clinical = cv.get("clinical") or {}
    if clinical:
        lines.append("  measure  bias    limits of agreement   mean abs. diff.")
        for measure, s in clinical.items():
            loa = s.get("loa") or [None, None]
            lines.append(f"  {measure:<8} {_fmt(s.get('bias'), 1):<7} [{_fmt(loa[0], 1)}, {_fmt(loa[1], 1)}]"
                         f"{'':<8}{_fmt(s.get('mad'), 1)}")
    return lines


def _domain_lines(domains: dict[str, Any]) -> list[str]:
    test_sets = domains.get("test_sets") or {}
    if not test_sets:
        return []
    lines = ["", f"across domains ({domains.get('source', 'test sets')}):"]
    for key, t in test_sets.items():
        classes = t.get("classes") or {}
        dice = ", ".join(f"{name} {_fmt(c.get('dice'), 3)}" for name, c in classes.items())
        clinical = "; ".join(f"{m} {_fmt(c.get('bias'), 1)} / {_fmt(c.get('mad'), 1)}"
                             for m, c in (t.get("clinical") or {}).items())
        lines.append(f"  {t.get('description', key)}: {t.get('volumes', '?')} volume(s), Dice {dice} "
                     f"(mean {_fmt(t.get('mean_dice'), 3)})")
        if clinical:
            lines.append(f"    bias / mean abs. diff.: {clinical}")
    return lines
