"""Which model produced a batch's masks, and the accuracy its cross-validation found.

``report.html`` shows it under the table, so that whoever reads the measures knows how far to trust each of
them (the bias and 95 % limits of agreement the model's own cross-validation measured against manual
references) and what the model is not for (the known limits of its card). Everything comes from what the
batch already recorded: ``predictions.json``'s predictor description and the model folder's
``model_card.json``; a model without a card, or a batch without a record, still gets its settings shown.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from autocmr.dataset.labels import AUTOCMR_LABELS
from autocmr.dataset.raw import DatasetJson
from autocmr.documents import layout
from autocmr.documents.layout import SELECTION
from autocmr.documents.model_card import ModelCard
from autocmr.documents.versioning import read_json_document
from autocmr.errors import AutocmrError
from autocmr.evaluation.clinical import STRUCTURES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agreement:
    """Prediction minus manual reference in a cross-validation: mean (bias), 95 % limits of agreement and
    mean absolute difference, in the measure's unit."""

    bias: float
    loa_lower: float | None  # None where the source keeps no limits of agreement (a selection.json)
    loa_upper: float | None
    mean_abs_diff: float


@dataclass(frozen=True)
class ModelProvenance:
    name: str
    folder: str
    settings: tuple[tuple[str, str], ...]  # (what, value) as shown: configuration, folds, precision, ...
    agreement: Mapping[str, Agreement]  # measure -> its cross-validated agreement; empty without a card
    agreement_source: str
    limits: tuple[str, ...]


def one_path(value: Any) -> Any:
    """A path ``predictions.json`` records; merged parts that saw it at different paths (another mount on each
    node) record a list of them, all the same folder: the first."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def model_provenance(predictor: Mapping[str, Any] | None) -> ModelProvenance | None:
    """The provenance of a batch from its recorded predictor description (``predictions.json``'s
    ``predictor``); None when nothing was recorded. An unreadable model card is logged and left out."""
    if not predictor:
        return None
    if predictor.get("selection") is not None or predictor.get("members"):
        return _selection_provenance(predictor)
    folder = str(one_path(predictor.get("model")) or "")
    card = None
    if folder:
        try:
            card = ModelCard.load(Path(folder))
        except (AutocmrError, OSError) as exc:
            logger.warning("model card of %s not shown in the report: %s", folder, exc)
    clinical = (card.cross_validation.get("clinical") or {}) if card is not None else {}
    agreement = {m: a for m, stats in clinical.items() if (a := _agreement(stats)) is not None}
    return ModelProvenance(
        name=card.name if card is not None else (Path(folder).name or "model"), folder=folder,
        settings=_settings(predictor), agreement=agreement,
        agreement_source=str(card.cross_validation.get("source", "")) if card is not None else "",
        limits=tuple(str(item) for item in card.limits) if card is not None else ())


def segmented_structures(predictor: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Which of LV, MYO and RV the recorded model segments, from its ``dataset.json`` labels (a selection:
    its first member's; its members segment the same classes). All three when the model cannot be read or
    names its classes otherwise: the measures then say what the masks hold, as before."""
    if not predictor:
        return STRUCTURES
    members = predictor.get("members") or []
    model = one_path(predictor.get("model"))
    folder = str(model or (members[0].get("model") if members and isinstance(members[0], dict) else "") or "")
    if not folder:
        return STRUCTURES
    try:
        labels = DatasetJson.load(Path(folder) / layout.DATASET).labels
    except (AutocmrError, OSError):
        return STRUCTURES
    segmented = tuple(name for name in STRUCTURES if name in labels)
    return segmented or STRUCTURES


def _selection_provenance(predictor: Mapping[str, Any]) -> ModelProvenance:
    """A configuration or ensemble chosen by ``autocmr_find_best``: its members, and the figures of the
    cross-validation it was chosen on (bias and mean absolute difference; selection.json keeps no limits of
    agreement)."""
    source = str(predictor.get("selection") or "")
    members = ", ".join(f"{m.get('name')} (folds {', '.join(map(str, m.get('folds', [])))})"
                        for m in predictor.get("members") or [])
    record: dict[str, Any] = {}
    note: tuple[tuple[str, str], ...] = ()
    if source:
        path = Path(source) / SELECTION if Path(source).is_dir() else Path(source)
        try:  # read as a document, not loaded: the figures are wanted even where the members' folders moved
            record = read_json_document(path, kind="selection", what_to_rerun="run autocmr_find_best again")
        except (AutocmrError, OSError) as exc:
            logger.warning("selection %s: its cross-validation figures are not shown in the report: %s", source, exc)
        other = _other_selection(predictor, record) if record else None
        if other:  # autocmr_find_best ran again since: its figures describe another selection, not these masks
            logger.warning("selection %s: its cross-validation figures are not shown in the report: %s", path, other)
            note = (("cross-validation figures", f"not shown: {path} {other}"),)
            record = {}
    chosen = record.get("chosen") or {}
    figures = chosen.get("cv_postprocessed") or chosen.get("cv") or {}
    agreement = {m: a for m, stats in (figures.get("clinical") or {}).items()
                 if (a := _agreement(stats, limits=False)) is not None}
    folds = ", ".join(map(str, record.get("folds") or []))
    return ModelProvenance(
        name=f"selection {predictor.get('name') or ''}".strip(), folder=source,
        settings=(("members", members),) + _settings(predictor) + note, agreement=agreement,
        agreement_source=f"autocmr_find_best, folds {folds}, {record.get('n_cases', '?')} cases" if record else "",
        limits=())


def _other_selection(predictor: Mapping[str, Any], record: Mapping[str, Any]) -> str | None:
    """How the selection.json read now differs from the selection the batch recorded (its name, its members'
    names and folds, and when it was made where the batch recorded that), or None when it is the same one."""
    chosen = record.get("chosen") or {}

    def members(entries: Any) -> list[tuple[Any, list[str]]]:
        return [(m.get("name"), [str(f) for f in m.get("folds") or []]) for m in entries or []
                if isinstance(m, Mapping)]

    if chosen.get("name") != predictor.get("name") or members(chosen.get("members")) != \
            members(predictor.get("members")):
        return (f"now records selection {chosen.get('name')!r}, not {predictor.get('name')!r} that made these "
                "masks (autocmr_find_best ran again since)")
    made = predictor.get("selection_created")
    if made and record.get("created") != made:
        return (f"was made again at {record.get('created')} (these masks: the selection made at {made}); its "
                "figures may not describe them")
    return None


def _agreement(stats: Any, *, limits: bool = True) -> Agreement | None:
    try:
        lower, upper = stats["loa"] if limits else (None, None)
        return Agreement(float(stats["bias"]), _optional(lower), _optional(upper),
                         float(stats.get("mad", stats.get("mean_abs_diff"))))
    except (KeyError, TypeError, ValueError):
        return None  # a measure without complete figures is not shown


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _settings(predictor: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    shown = []
    if predictor.get("configuration"):
        shown.append(("configuration", str(predictor["configuration"])))
    if predictor.get("folds"):
        shown.append(("folds", ", ".join(str(f) for f in predictor["folds"])))
    if "mirror_axes" in predictor:
        axes = predictor["mirror_axes"] or []
        shown.append(("test-time mirroring", f"axes {', '.join(map(str, axes))}" if axes else "off"))
    for key in ("step", "precision", "device"):
        if predictor.get(key) is not None:
            shown.append((key, str(predictor[key])))
    post = predictor.get("postprocessing")
    if isinstance(post, Mapping):
        names = {value: name for name, value in AUTOCMR_LABELS.items()}
        parts = (["largest foreground component"] if post.get("foreground_lcc") else []) + \
                [f"largest {names.get(label, f'label {label}')} component" for label in post.get("per_label_lcc") or []]
        shown.append(("postprocessing", ", ".join(parts) if parts else "none"))
    cine = predictor.get("cine")
    if isinstance(cine, Mapping) and cine.get("mode"):
        shown.append(("4D cines", "every frame at full accuracy" if cine["mode"] == "full" else
                      f"fast path, near-tie tolerance {100 * float(cine.get('tie_tolerance', 0)):g} %"))
    return tuple(shown)


__all__ = ["Agreement", "ModelProvenance", "model_provenance"]
