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


FOUNDATION = {"core", "edits", "io", "errors"}
# Which top-level parts of editor/ each part may import (see the README's Architecture section).
ALLOWED = {
    "errors": set(),
    "data": {"errors", "core"},  # core.environment only: where $EDITOR_DATA points
    "engines": FOUNDATION,  # the loader validates a checkpoint (io, core) before transformers reads it
    "core": FOUNDATION,
    "edits": FOUNDATION,
    "io": FOUNDATION,
    "pipeline": FOUNDATION | {"engines"},
    "evaluation": FOUNDATION | {"engines", "data", "pipeline"},
    "methods": FOUNDATION | {"engines", "data", "evaluation"},
    "recipes": FOUNDATION | {"engines", "data", "pipeline", "evaluation", "methods"},
    "cli": FOUNDATION | {"engines", "data", "pipeline", "evaluation", "methods", "recipes"},
}


def test_dependencies_point_up_the_layers():
    wrong = []
    for path in MODULES:
        parts = path.relative_to(EDITOR).parts
        part = parts[0] if len(parts) > 1 else path.stem
        if part == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("editor."):
                target = node.module.split(".")[1]
                if target != part and target not in ALLOWED[part]:
                    wrong.append(f"{path.relative_to(EDITOR)} imports editor.{target}")
    assert not wrong, wrong


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists its packages by hand (the built-in recipes are mapped from the top-level recipes/
    folder), so a new package folder must be added there or the installed wheel lacks it."""
    import tomllib

    config = tomllib.loads((EDITOR.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {".".join(p.parent.relative_to(EDITOR.parent).parts) for p in EDITOR.rglob("__init__.py")}
    assert folders <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(folders - listed)}"
    assert "editor.recipes.builtin" in listed and config["package-dir"]["editor.recipes.builtin"] == "recipes"
