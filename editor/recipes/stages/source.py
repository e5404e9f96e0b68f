"""Stage `source`: resolve the recipe's model into a checkpoint directory (converted or downloaded into the cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editor.io.atomic import write_text
from editor.recipes.context import RunContext, dir_fingerprint

NAME, READS = "source", ()


def settings(ctx: RunContext) -> dict[str, Any]:
    spec = ctx.recipe.model.source
    local = Path(spec).expanduser()
    return {"source": spec, "files": dir_fingerprint(local) if local.is_dir() else None}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.io.checkpoint import Checkpoint
    from editor.io.sources import resolve_source

    path = resolve_source(ctx.recipe.model.source, progress=ctx.progress)
    info = Checkpoint.open(path).info()
    facts = {"path": str(path), "model_type": info.arch.model_type, "layers": info.num_layers, "heads": info.num_heads}
    write_text(out / "source.json", json.dumps(facts, indent=2) + "\n")
    return facts


def valid(result: dict[str, Any]) -> bool:
    # The builtin cache or a Hub snapshot can be deleted behind our back; then resolve again.
    return (Path(result["path"]) / "config.json").is_file()


def numbers(result: dict[str, Any]) -> str:
    return f"{result['model_type']}, {result['layers']} layers x {result['heads']} heads: {result['path']}"
