"""The layout keeps its promises: few top-level entries, every module says what it holds in its first line,
no module over about 400 lines and no function over about 80 unless the unit says why ("Long because")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EDITOR = Path(__file__).resolve().parent.parent / "editor"
MODULES = sorted(p for p in EDITOR.rglob("*.py"))
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80
REASON = "Long because"


def test_top_level_is_small():
    entries = [p.name for p in EDITOR.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 12, sorted(entries)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(EDITOR)))
def test_module_first_line_says_what_it_holds(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.splitlines()[0]) > 10, (
        f"{path}: the module needs a docstring whose first line says what it holds"
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(EDITOR)))
def test_units_are_short_or_say_why(path):
    text = path.read_text()
    tree = ast.parse(text)
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        assert REASON in (ast.get_docstring(tree) or ""), (
            f"{path}: {lines} lines; split it or say why in the module docstring"
        )
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                assert REASON in (ast.get_docstring(node) or ""), (
                    f"{path}:{node.lineno} {node.name} is {length} lines; split it or say why"
                )
