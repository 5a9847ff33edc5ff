"""Dependencies point down the data flow (STYLE principle 14): a module never imports one from a higher layer.

Every module under ``autocmr/`` is parsed (not imported) and each ``import``/``from ... import`` is read, those
inside functions included (a lazy import is still an arrow). An arrow from a lower layer to a higher one fails
the test; there are no exceptions (a dependency that must point up is inverted: the higher layer passes a hook
down, as ``autocmr_predict`` passes the analysis to batch prediction).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "autocmr"

# The layer of each top-level part of ``autocmr`` (a package or a single module). A module may import from its
# own layer or any lower one. ``autocmr`` itself (``__version__``) sits at the bottom. The order is the data flow:
# a trained model is stored (models) and predicted with (inference); training's final validation predicts its
# validation cases with that predictor and scores them (evaluation: pure metrics), so inference and evaluation
# sit below the trainers; the clinical analysis and model selection use predictions, so they sit above.
LAYERS: dict[str, int] = {
    # 0: leaves everything may use
    "autocmr": 0, "errors": 0, "settings": 0, "allocator": 0, "device": 0, "parallel": 0, "precision": 0,
    "parent_watch": 0,
    # 1: reading and writing images
    "io": 1,
    # 2: persisted documents (neutral: plans, checkpoints, manifests) and the raw dataset layout
    "documents": 2, "dataset": 2,
    # 3: what the planner configures, and metrics of label maps (no model involved)
    "networks": 3, "preprocessing": 3, "evaluation": 3,
    "planners": 4,
    # 5: the model store: model folders, the packaged default model, archives, model cards
    "models": 5,
    "inference": 6,
    "trainers": 7,
    # 8: reports built on predictions: the clinical analysis, choosing a configuration or ensemble
    "analysis": 8, "selection": 8,
    # 9: helpers for tests and the demo, which drive the whole pipeline
    "testing": 9, "demo": 9,
    "cli": 10,
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
    unexpected = sorted(_upward_arrows())
    listing = "\n".join(f"  {s} (layer {_layer_of(s)}) -> {t} (layer {_layer_of(t)})" for s, t in unexpected)
    assert not unexpected, f"imports from a lower layer to a higher one:\n{listing}"


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
