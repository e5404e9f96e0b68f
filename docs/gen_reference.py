"""The reference pages, generated at every build from the code (run by mkdocs-gen-files; never pasted):

- reference/cli.md: every `wedit` command's help, from the parsers the CLI itself builds (the flags come from
  the settings classes, so a setting's description in code is its flag's text here);
- reference/recipe.md: every recipe section and field, from the settings classes (``schema_markdown``);
- reference/architectures.md: the edit x architecture matrix, computed by compiling a probe edit per cell.
"""

from __future__ import annotations

import os

import mkdocs_gen_files

from editor.cli import COMMANDS, build_parser
from editor.core.capabilities import matrix_markdown
from editor.recipes.schema import schema_markdown

os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width: the page must not depend on it


def cli_page() -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    lines = [
        "# Command line",
        "",
        "Generated from the parsers `wedit` builds (`editor.cli.build_parser`). Flags that set a method's "
        "settings take their text from the settings classes, the same text as the [recipe schema](recipe.md).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`wedit {name}`](#wedit-{name}) | {help_line} |" for name, (_module, help_line) in COMMANDS.items()]
    for name in COMMANDS:
        lines += ["", f"## wedit {name}", "", "```text", commands[name].format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def recipe_page() -> str:
    return (
        "# Recipe schema\n\nGenerated from the settings classes (`editor.recipes.schema.schema_markdown`): a recipe's "
        "sections are the methods' settings, and each field here is also its command's flag "
        "(see [the command line](cli.md)). How recipes run: [Recipes](../guides/recipes.md).\n\n"
        + schema_markdown()
        + "\n"
    )


def architectures_page() -> str:
    return (
        "# Architecture matrix\n\n`wedit archs` prints this table (`--markdown`, `--json`). Each cell is computed "
        "by compiling one probe edit of that kind for a synthetic checkpoint of that architecture "
        "(`editor/core/capabilities.py`): a refusal is the bake's own message. What the families are and why "
        "some edits are refused: [Architectures](../architectures.md).\n\n" + matrix_markdown() + "\n"
    )


for path, text in {
    "reference/cli.md": cli_page(),
    "reference/recipe.md": recipe_page(),
    "reference/architectures.md": architectures_page(),
}.items():
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)
