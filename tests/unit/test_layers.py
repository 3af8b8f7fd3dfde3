"""The package's layers, read from the imports themselves: arrows point one way only.

``ALLOWED`` is docs/architecture.md's layout table as data. Every ``castframe`` import in
``src/`` (at module level or inside a function alike) must be one the table allows, and the
table itself must have no cycle, so no package-level import cycle can come back unnoticed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "castframe"

BOTTOM = {"config", "errors", "logs", "metrics", "__version__"}
"""Modules every layer may use: settings, the error tables, logging and metric objects."""

ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "errors": set(),
    "logs": set(),
    "metrics": set(),
    "store": set(),
    "media": set(),
    "catalog": set(),
    "faces": set(),
    "client": set(),
    "cli_client": {"client"},
    "engines": {"catalog", "media"},
    "jobs": {"catalog", "media", "store"},
    "webhooks": {"jobs", "media", "store"},
    "dispatch": {"catalog", "engines", "faces", "jobs", "media", "store"},
    "services": {"catalog", "dispatch", "engines", "jobs", "media", "store", "webhooks"},
    "api": {"catalog", "dispatch", "engines", "faces", "jobs", "media", "services", "store"},
    "app": {"api", "services"},
    "cli": {"app", "catalog", "cli_client", "jobs", "services", "store"},
}


def layer_of(module: str) -> str:
    """``castframe.jobs.store`` -> ``jobs``; ``castframe`` itself -> ``castframe``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[tuple[str, str]]]:
    """Layer -> {(imported layer, file)} for every import of another castframe layer."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE.parent).with_suffix("")
        layer = layer_of(".".join(relative.parts))
        if layer == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("castframe"):
                module = node.module or ""
                names = (
                    [f"castframe.{a.name}" for a in node.names]
                    if module == "castframe"
                    else [module]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("castframe")]
            for name in names:
                target = layer_of(name)
                if target != layer:
                    found[layer].add((target, str(path.relative_to(SOURCE))))
    return found


def test_every_import_is_one_the_layout_allows() -> None:
    wrong = [
        f"{file}: {layer} imports {target}"
        for layer, edges in imports().items()
        for target, file in sorted(edges)
        if target not in BOTTOM and target not in ALLOWED.get(layer, set())
    ]
    assert wrong == []


def test_the_layout_has_no_cycle() -> None:
    graph = {layer: {t for t in targets if t in ALLOWED} for layer, targets in ALLOWED.items()}
    done: set[str] = set()

    def visit(layer: str, path: tuple[str, ...]) -> None:
        if layer in path:
            pytest.fail(" -> ".join((*path, layer)))
        if layer in done:
            return
        for target in graph[layer]:
            visit(target, (*path, layer))
        done.add(layer)

    for layer in graph:
        visit(layer, ())


def test_nothing_but_the_app_imports_the_api() -> None:
    importers = {layer for layer, edges in imports().items() if any(t == "api" for t, _ in edges)}
    assert importers <= {"app"}


def test_the_checker_sees_imports_inside_functions() -> None:
    """The worker's diffusers engine is imported lazily; the reader must still see it."""
    assert any(target == "engines" for target, _file in imports()["services"])


MODEL_AWARE = {"catalog", "engines", "client", "cli_client"}
"""Where a model id or a params field may be named: the catalog declares models, engines map
them onto providers; the SDK and its CLI are clients of the API, with client-side defaults."""


def model_words() -> set[str]:
    """Model ids, params keys and the (unmistakable) image field names of every model."""
    from castframe.catalog import MODELS

    words = set(MODELS) | {spec.params_key for spec in MODELS.values()}
    words |= {
        field.name for spec in MODELS.values() for field in spec.image_fields if "_" in field.name
    }
    return words


def test_no_module_outside_the_catalog_and_engines_names_a_model() -> None:
    """Adding a model is a catalog module: the generic path (validation, pricing, routing,
    the worker, the API) reads the registry and never a model's id or fields."""
    words = model_words()
    found = []
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE.parent).with_suffix("")
        if layer_of(".".join(relative.parts)) in MODEL_AWARE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = {word for word in words if word in node.value}
                if named:
                    found.append(f"{relative}:{node.lineno}: {sorted(named)}")
    assert found == []
