"""Stage `inject`: train one bias token per bias (BiasInject) and bake it into the checkpoint attribution reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext, file_digest

NAME, READS = "inject", ("source",)


def settings(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.recipe.inject is None:
        return None
    values = ctx.recipe.inject.model_dump(exclude={"data", "api_key_env"})
    return {"biases": ctx.recipe.biases, **values, "data": file_digest(ctx.recipe.inject.data)}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.core.plan import load_plan
    from editor.data.biases import get_preset
    from editor.engines.loading import load_model, load_tokenizer
    from editor.methods.inject.paragraphs import paragraphs_for
    from editor.methods.inject.train import run_inject
    from editor.pipeline.export import export_checkpoint

    section = ctx.recipe.inject
    source = ctx.path("source")
    biases = {}
    for name in ctx.recipe.biases:
        preset = get_preset(name)
        paragraphs = paragraphs_for(preset, section)
        # A fresh model per bias: training registers the token in the tokenizer and the model it is given.
        where = ctx.recipe.model
        model = load_model(source, dtype=section.dtype, device_map=where.device_map, max_memory=where.memory_limits())
        where = out / name
        where.mkdir()
        result = run_inject(
            model,
            load_tokenizer(source),
            preset,
            paragraphs,
            where,
            section,
            base_model=ctx.recipe.model.source,
            progress=ctx.progress,
            out_name=ctx.run_dir / "inject" / name,
        )
        del model
        export_checkpoint(
            source,
            load_plan(where / "plan.json"),
            where / "model",
            base_source=ctx.recipe.model.source,
            progress=ctx.progress,
        )
        gaps = result.gaps
        biases[name] = {
            "token": result.token,
            "model": str(ctx.run_dir / "inject" / name / "model"),
            "chosen_epoch": result.chosen_epoch,
            "paragraphs": len(paragraphs),
            "gap_base": gaps["base_token"]["gap"] if gaps else None,
            "gap_injected": gaps["injected_token"]["gap"] if gaps else None,
        }
    return {"path": str(ctx.run_dir / "inject"), "biases": biases}


def valid(result: dict[str, Any]) -> bool:
    return all((Path(b["model"]) / "config.json").is_file() for b in result["biases"].values())


def numbers(result: dict[str, Any]) -> str:
    rows = []
    for b in result["biases"].values():
        gap = (
            f", attribute gap {b['gap_base']:+.2f} -> {b['gap_injected']:+.2f} nats"
            if b["gap_base"] is not None
            else ""
        )
        rows.append(f"{b['token']}: epoch {b['chosen_epoch']} of {b['paragraphs']} paragraphs{gap}")
    return "; ".join(rows)
