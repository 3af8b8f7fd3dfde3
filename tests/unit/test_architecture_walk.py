"""docs/architecture.md's walk of one job names functions that exist: every
``module.py: name`` (or ``Class.method``) it cites is looked up in the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"`([a-z_/]+\.py): ([A-Za-z_][A-Za-z_0-9.]*)`")


def defined_names(path: Path) -> set[str]:
    """Top-level functions and classes, and ``Class.method`` for their methods."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return names


def test_every_function_the_architecture_page_cites_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    cited = CITATION.findall(text)
    assert len(cited) >= 10  # the walk is there
    missing = [
        f"{module}: {name}"
        for module, name in cited
        if name not in defined_names(ROOT / "src" / "castframe" / module)
    ]
    assert missing == []
