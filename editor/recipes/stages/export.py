"""Stage `export`: bake the plan into a new checkpoint, with the run's figures attached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext

NAME, READS = "export", ("source", "plan")


def settings(ctx: RunContext) -> dict[str, Any]:
    return {**ctx.recipe.export.model_dump(), "max_shard_size": ctx.recipe.export.max_shard_bytes}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.core.plan import load_plan
    from editor.pipeline.export import export_checkpoint

    figures: list[Path] = []
    if ctx.recipe.export.attach_figures:
        for stage in ("attribute", "steer", "fit", "search"):
            if stage in ctx.results:
                figures += [ctx.path(stage) / name for name in ctx.results[stage]["figures"]]
    result = export_checkpoint(
        ctx.path("source"),
        load_plan(ctx.path("plan") / "plan.json"),
        out / ctx.recipe.name,
        base_source=ctx.recipe.model.source,
        progress=ctx.progress,
        max_shard_size=ctx.recipe.export.max_shard_bytes,
        attachments=figures,
        allow_non_finite=ctx.recipe.export.allow_non_finite,
    )
    return {
        "path": str(ctx.run_dir / "export" / ctx.recipe.name),
        "changed": len(result.changed),
        "added": len(result.added),
        "copied": len(result.copied_files),
        "notes": result.notes,
    }


def valid(result: dict[str, Any]) -> bool:
    return (Path(result["path"]) / "editor_manifest.json").is_file()


def numbers(result: dict[str, Any]) -> str:
    return f"{result['changed']} tensors changed, {result['added']} added, {result['copied']} shard(s) copied: {result['path']}"
