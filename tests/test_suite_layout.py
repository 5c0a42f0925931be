"""The test suite's own shape: helpers live in support modules, never in test modules."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(), filename=str(source))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _is_test_module(dotted: str) -> bool:
    return dotted.split(".")[-1].startswith("test_")


def test_no_test_module_imports_another_test_module() -> None:
    offenders = {
        f"{source.relative_to(TESTS.parent)} imports {name}"
        for source in TESTS.rglob("*.py")
        for name in _imported_modules(source)
        if (name.startswith("tests.") or name.startswith("test_")) and _is_test_module(name)
    }
    assert not offenders, sorted(offenders)
