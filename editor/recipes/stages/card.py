"""Stage `card`: the recipe, the command and every stage's numbers recorded in the manifest; the card rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext

NAME, READS = "card", ("export", "verify", "eval", "gguf")


def settings(ctx: RunContext) -> dict[str, Any]:
    return {"recipe": ctx.data}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor import __version__
    from editor.io.atomic import write_text
    from editor.io.manifest import read_manifest, write_manifest
    from editor.pipeline.card import write_card

    export = ctx.path("export")
    manifest = read_manifest(export)
    root = export.absolute().parent
    manifest["recipe"] = {
        "recipe": ctx.recipe_arg or str(ctx.recipe_path),
        "settings": ctx.data,
        "command": ctx.command(root),
    }
    manifest["run"] = {
        "editor_version": __version__,
        "stages": {name: result for name, result in ctx.results.items() if name != "source"},
    }
    write_manifest(export, manifest)
    card = write_card(export, read_manifest(export))
    # A copy beside the stage marker, so the run directory shows the card without opening the model.
    write_text(out / "README.md", card.read_text())
    return {"path": str(card)}


def numbers(result: dict[str, Any]) -> str:
    return result["path"]
