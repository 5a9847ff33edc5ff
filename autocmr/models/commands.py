"""The text ``autocmr_models`` prints: lists, model cards with the manifest's facts, verification results."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from autocmr.documents import layout
from autocmr.documents.manifest import ModelManifest, verify_documents, verify_weight_file, verify_weight_listing
from autocmr.documents.model_card import ModelCard
from autocmr.errors import DocumentError, PlansError
from autocmr.models.registry import is_installed, list_models, resolve_model


def list_text(models_dir: str | Path | None = None) -> str:
    models = list_models(models_dir)
    if not models:
        return "no model installed (import one with `autocmr_models import ARCHIVE`)"
    lines = [f"{'name':<24} {'configuration':<14} {'folds':<16} path"]
    for m in models:
        config = m.manifest.configuration if m.manifest else "?"
        line = f"{m.name:<24} {config:<14} {','.join(m.folds) or '-':<16} {m.path}"
        lines.append(f"{line}\n{'':<24} ? cannot be used: {m.error}" if m.error else line)
    return "\n".join(lines)


def _model_folder(reference: str, models_dir: str | Path | None) -> Path:
    """The model folder ``reference`` names; PlansError when it is none (no plans.json in it)."""
    folder = resolve_model(reference, models_dir=models_dir)
    if not (folder / layout.PLANS).is_file():
        raise PlansError(f"{folder}: not a model folder (no {layout.PLANS})")
    return folder


def verify_text(reference: str, *, models_dir: str | Path | None = None) -> str:
    """Checks every weight file listed in the manifest. A mismatch, a listed file that is missing, or a folder
    without checksums raises (the command exits 2: a script's ``verify && deploy`` stops); weight files the
    manifest does not list fail a packed, exported or imported model (loading refuses them too) and are named in
    the text of a training folder (a fold still training)."""
    folder = _model_folder(reference, models_dir)
    manifest = ModelManifest.load(folder)
    if manifest is None or manifest.is_legacy or not manifest.weights:
        raise DocumentError(f"{folder}: no checksums recorded, nothing can be verified (run `autocmr_models upgrade "
                            f"{folder}` to record them for the files as they are now)")
    missing = [rel for rel in manifest.weights if not (folder / rel).is_file()]
    if missing:
        raise DocumentError(f"{folder}: weight file(s) listed in the manifest are missing: {missing}")
    # a packed/exported/imported model: exactly what loading accepts
    verify_weight_listing(folder, manifest, installed=is_installed(folder))
    for rel in manifest.weights:
        verify_weight_file(folder, manifest, rel)
    documents = verify_documents(folder, manifest)
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.glob(f"{layout.FOLD_PREFIX}*/*.pth"))
    unlisted = [rel for rel in on_disk if rel not in manifest.weights]
    text = (f"{folder}: {len(manifest.weights)} weight file(s)"
            f"{f' and {documents} document(s)' if documents else ''} checked against the manifest, all match")
    if not documents:
        text += ("; its documents (plans.json, postprocessing.json, ...) have no checksums (a training folder, or "
                 "packed before they had): only the weights were verified")
    return text + (f"; not covered by the manifest (not verified): {unlisted}" if unlisted else "")


def info_text(reference: str, *, models_dir: str | Path | None = None) -> str:
    folder = _model_folder(reference, models_dir)
    manifest = ModelManifest.load(folder)
    card = ModelCard.load(folder)
    size = sum(p.stat().st_size for p in folder.glob(f"{layout.FOLD_PREFIX}*/*.pth")) / 1e6
    facts = [f"folder: {folder}", f"weights: {size:.1f} MB"]
    if manifest is not None:
        facts.insert(1, f"manifest: version {manifest.schema_version}, {len(manifest.weights)} checksum(s), "
                        f"written by autocmr {manifest.autocmr_version}")
    body = card.render() if card else f"(no {layout.MODEL_CARD} in this folder)"
    return body + "\n\n" + "\n".join(facts)


def pack_with_card(source: str | Path, dest: str | Path, *, name: str, folds: Sequence[str] | None,
                   checkpoint: str, half: bool, cv_summary: Path | None,
                   extra: dict[str, Any] | None, domains: Path | None = None) -> ModelManifest:
    """The compact form with a card built from the source folder (figures from ``cv_summary`` if given, figures
    across domains from ``domains``)."""
    from autocmr.models.card import build_model_card
    from autocmr.models.store import pack_model

    card = build_model_card(source, name=name, cv_summary=cv_summary, extra=extra, folds=folds, domains=domains)
    return pack_model(source, dest, folds=folds, checkpoint=checkpoint, half=half, name=name, card=card)
