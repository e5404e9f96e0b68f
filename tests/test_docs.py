"""The documentation: the reference pages are generated from the code (every command, flag and recipe field, and a
description changed in code changes the page), the README's quickstart is the site's, and the README stays a
front page. `make test` also builds the whole site with `mkdocs build --strict`; the quickstart itself runs in
tests/test_smollm2_attribution.py, read from the page."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def generated_pages() -> dict[str, str]:
    """Run docs/gen_reference.py as the build does, with mkdocs-gen-files' writer replaced by a dictionary."""
    pages: dict[str, str] = {}

    class Page:
        def __init__(self, path: str, _mode: str) -> None:
            self.path, self.parts = path, []

        def write(self, text: str) -> None:
            self.parts.append(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pages[self.path] = "".join(self.parts)

    fake = types.ModuleType("mkdocs_gen_files")
    fake.open = Page  # type: ignore[attr-defined]
    saved = sys.modules.get("mkdocs_gen_files")
    sys.modules["mkdocs_gen_files"] = fake
    try:
        spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        if saved is None:
            sys.modules.pop("mkdocs_gen_files", None)
        else:
            sys.modules["mkdocs_gen_files"] = saved
    return pages


def test_the_cli_page_holds_every_command_and_every_flag():
    from editor.cli import COMMANDS, build_parser

    page = generated_pages()["reference/cli.md"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"## wedit {name}" in page and name in COMMANDS
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in page, f"wedit {name} {flag}"


def test_the_recipe_page_holds_every_field_and_follows_a_description_changed_in_code(monkeypatch):
    from editor.methods.attribute.settings import AttributeSettings
    from editor.recipes.schema import schema_markdown

    pages = generated_pages()
    assert schema_markdown() in pages["reference/recipe.md"]
    assert "| `attribute` (optional) | `k_max` |" in pages["reference/recipe.md"]
    field = AttributeSettings.model_fields["k_max"]
    monkeypatch.setattr(field, "description", "the largest k, said another way")
    pages = generated_pages()
    assert "the largest k, said another way" in pages["reference/recipe.md"]
    assert "the largest k, said another way" in pages["reference/cli.md"]  # the flag's help is the same text


def test_the_architecture_page_is_the_matrix():
    from editor.core.capabilities import matrix_markdown

    page = generated_pages()["reference/architectures.md"]
    assert matrix_markdown() in page and "| mixtral |" in page and "| llava |" in page


def test_the_readme_is_a_front_page_with_the_sites_quickstart():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    page = (ROOT / "docs" / "pages" / "getting-started.md").read_text()
    block = page.split("<!-- quickstart -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert f"```bash\n{block}```" in readme, "README's quickstart differs from docs/pages/getting-started.md's"
    for needed in ("make setup", "make test", "pip install", "## Quickstart"):
        assert needed in readme


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "docs" / "mkdocs.yml").read_text())

    def flat(entries) -> list[str]:
        out = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            out += flat(value) if isinstance(value, list) else [value]
        return out

    listed = set(flat(config["nav"]))
    pages = ROOT / "docs" / "pages"
    written = {str(p.relative_to(pages)) for p in pages.rglob("*.md")}
    generated = set(generated_pages())
    assert written | generated == listed, (sorted(listed - written - generated), sorted(written - listed))
