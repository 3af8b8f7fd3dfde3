"""The test suite's own layout: shared helpers live in conftest.py and tests/support/.

Read with ``ast``, not imported: no test module imports another test module (what two
test modules share belongs in tests/support/), and each fixture is defined in one file.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(TESTS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def owning_test_module(name: str) -> str | None:
    """``tests.test_x``, ``tests.e2e.test_x``, ``tests.unit.test_x`` for those modules or
    anything inside one (``tests.test_x.helper``); None for conftest, support and the rest."""
    parts = name.split(".")
    if parts[0] != "tests":
        return None
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("test_"):
            return ".".join(parts[: index + 1])
    return None


def imported_names(tree: ast.AST, module: str, is_package: bool = False) -> set[str]:
    """Every module a file imports, anywhere in it, relative imports resolved; for
    ``from a import b`` both ``a`` and ``a.b`` (``b`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                if not is_package:
                    package.pop()
                base_parts = package[: len(package) - (node.level - 1)]
                if node.module:
                    base_parts.append(node.module)
                base = ".".join(base_parts)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _is_fixture_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "fixture"
    return isinstance(target, ast.Name) and target.id == "fixture"


def fixture_names(tree: ast.AST) -> set[str]:
    """Names of the fixtures a file defines: the function's name or the decorator's ``name=``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not _is_fixture_decorator(decorator):
                continue
            name = node.name
            if isinstance(decorator, ast.Call):
                for keyword in decorator.keywords:
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        name = str(keyword.value.value)
            names.add(name)
    return names


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_checks_see_what_they_look_for() -> None:
    source = ast.parse(
        "import tests.test_a\n"
        "from tests.e2e.test_b import helper\n"
        "from tests.unit import test_c\n"
        "from . import test_d\n"
        "from .test_e import thing\n"
        "from tests.support.images import astronaut\n"
        "from tests.conftest import Api\n"
        "def f():\n"
        "    from tests.test_f import late\n"
    )
    imported = {owning_test_module(n) for n in imported_names(source, "tests.unit.test_x")}
    assert imported - {None} == {
        "tests.test_a",
        "tests.e2e.test_b",
        "tests.unit.test_c",
        "tests.unit.test_d",
        "tests.unit.test_e",
        "tests.test_f",
    }
    fixtures = ast.parse(
        "import pytest\n"
        "from pytest import fixture\n"
        "@pytest.fixture\ndef a(): ...\n"
        "@pytest.fixture(scope='session')\ndef b(): ...\n"
        "@fixture\nasync def c(): ...\n"
        "@pytest.fixture(name='d')\ndef _d(): ...\n"
        "class TestK:\n    @pytest.fixture\n    def e(self): ...\n"
        "def not_a_fixture(): ...\n"
        "@pytest.mark.slow\ndef test_g(): ...\n"
    )
    assert fixture_names(fixtures) == {"a", "b", "c", "d", "e"}


def test_no_test_module_imports_another() -> None:
    offenders = set()
    for path in python_files():
        module = module_name(path)
        for name in imported_names(parse(path), module, path.name == "__init__.py"):
            imported = owning_test_module(name)
            if imported is not None and imported != module:
                offenders.add(f"{path.relative_to(TESTS.parent)} imports {imported}")
    assert not offenders, "move what they share into tests/support/:\n" + "\n".join(
        sorted(offenders)
    )


def test_each_fixture_is_defined_in_one_file() -> None:
    files: dict[str, list[str]] = defaultdict(list)
    for path in python_files():
        for name in fixture_names(parse(path)):
            files[name].append(str(path.relative_to(TESTS.parent)))
    assert {"ref", "http_server", "api"} <= files.keys()  # the scan does find fixtures
    repeated = {name: where for name, where in files.items() if len(where) > 1}
    assert not repeated, f"define each fixture once, in a conftest.py: {repeated}"
