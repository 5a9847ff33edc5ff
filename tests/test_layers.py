"""Dependencies point down the data flow (STYLE principle 14): a module never imports one from a higher layer.

Every module under ``autocmr/`` is parsed (not imported) and each ``import``/``from ... import`` is read, those
inside functions included (a lazy import is still an arrow). An arrow from a lower layer to a higher one fails
the test, unless it is listed in ``KNOWN_EXCEPTIONS`` with the reason it is still there.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "autocmr"

# The layer of each top-level part of ``autocmr`` (a package or a single module). A module may import from its
# own layer or any lower one. ``autocmr`` itself (``__version__``) sits at the bottom.
LAYERS: dict[str, int] = {
    # 0: leaves everything may use
    "autocmr": 0, "errors": 0, "settings": 0, "allocator": 0, "device": 0, "parallel": 0,
    # 1: reading and writing images
    "io": 1,
    # 2: persisted documents (neutral: plans, checkpoints, manifests) and the raw dataset layout
    "documents": 2, "dataset": 2,
    # 3: what the planner configures
    "networks": 3, "preprocessing": 3,
    "planners": 4,
    "trainers": 5,
    "inference": 6,
    # 7: what uses trained models: the model store, evaluation of predictions
    "models": 7, "evaluation": 7,
    # 8: reports built on inference and evaluation
    "analysis": 8, "selection": 8,
    # 9: helpers for tests and the demo, which drive the whole pipeline
    "testing": 9, "demo": 9,
    "cli": 10,
}

# (importing module, imported module) -> why the upward arrow is still there. Each entry is checked to still
# exist, so a fixed arrow must be removed from this list too.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    # Training reads and writes model folders through inference.model_folder (engineer F's area, being
    # reworked into autocmr.documents); moving ModelFolder below the trainers fixes these four.
    ("autocmr.trainers.finetune", "autocmr.inference.model_folder"): "ModelFolder lives in inference",
    ("autocmr.trainers.pretrained_plans", "autocmr.inference.model_folder"): "ModelFolder lives in inference",
    ("autocmr.trainers.run", "autocmr.inference.model_folder"): "ModelFolder lives in inference",
    ("autocmr.inference.model_folder", "autocmr.models.registry"):
        "default-model resolution (engineer F, in progress); registry belongs beside the manifest in documents",
    # Final validation predicts and evaluates the validation cases: it needs the sliding-window predictor,
    # export and postprocessing decision from inference and the metrics from evaluation. Splitting it needs
    # validation to take an explicit inference-settings object (issue 13 point 3, deferred: trainers/ and
    # validation.py are being edited by engineers B, E and F).
    ("autocmr.trainers.run", "autocmr.inference.postprocessing"): "postprocessing decision of final validation",
    ("autocmr.trainers.run", "autocmr.inference.harmonisation"): "intensity reference written at fold end",
    ("autocmr.trainers.validation", "autocmr.inference.export"): "final validation exports predictions",
    ("autocmr.trainers.validation", "autocmr.inference.postprocessing"): "final validation decides postprocessing",
    ("autocmr.trainers.validation", "autocmr.inference.sliding_window"): "final validation predicts",
    ("autocmr.trainers.validation", "autocmr.evaluation"): "final validation computes metrics",
    # The per-subject analysis hook of batch prediction (engineer C) and ED/ES detection of the fast cine path
    # (engineer D), both in progress; the imports are lazy, so importing inference does not load analysis.
    ("autocmr.inference.batch", "autocmr.analysis.pipeline"): "analysis hook in batch prediction",
    ("autocmr.inference.fast_cine", "autocmr.analysis.phases"): "ED/ES detection of the fast cine path",
}


def _module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, root: Path = PACKAGE_ROOT) -> set[str]:
    """Every ``autocmr`` module ``path`` imports, at any depth of the file (relative imports resolved)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == "autocmr" or name.startswith("autocmr.")}


def _layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "autocmr"
    if part not in LAYERS:
        raise AssertionError(f"{module}: top-level part {part!r} has no layer; add it to LAYERS in {__file__}")
    return LAYERS[part]


@lru_cache(maxsize=1)
def _all_arrows() -> frozenset[tuple[str, str]]:
    arrows = set()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _module_name(path)
        arrows.update((source, target) for target in _imported_modules(path))
    return frozenset(arrows)


def _upward_arrows() -> set[tuple[str, str]]:
    return {(s, t) for s, t in _all_arrows() if _layer_of(t) > _layer_of(s)}


def test_no_module_imports_from_a_higher_layer() -> None:
    unexpected = sorted(_upward_arrows() - set(KNOWN_EXCEPTIONS))
    listing = "\n".join(f"  {s} (layer {_layer_of(s)}) -> {t} (layer {_layer_of(t)})" for s, t in unexpected)
    assert not unexpected, f"imports from a lower layer to a higher one:\n{listing}"


def test_known_exceptions_still_exist() -> None:
    stale = sorted(set(KNOWN_EXCEPTIONS) - _upward_arrows())
    assert not stale, f"these arrows are gone or no longer upward; remove them from KNOWN_EXCEPTIONS: {stale}"


def test_lower_layers_never_import_planners_trainers_or_inference() -> None:
    """The rule of issue 13 in its own words, with no exceptions allowed."""
    lower = {"io", "networks", "preprocessing", "dataset", "documents"}
    higher = {"planners", "trainers", "inference"}
    bad = sorted((s, t) for s, t in _all_arrows()
                 if s.split(".")[1:2] and s.split(".")[1] in lower and t.split(".")[1:2] and t.split(".")[1] in higher)
    assert not bad, f"lower layers import planners/trainers/inference: {bad}"


def test_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The walker itself: a lazy import inside a function and a relative import both count as arrows."""
    package = tmp_path / "autocmr" / "io"
    package.mkdir(parents=True)
    module = package / "probe.py"
    module.write_text("def f():\n    from autocmr.trainers import run\n\nfrom .atomic import x\n", encoding="utf-8")
    assert _imported_modules(module, tmp_path / "autocmr") == {"autocmr.trainers", "autocmr.io.atomic"}
