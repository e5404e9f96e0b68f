"""Stage `search`: the Optuna search across bakes and head removals; its chosen plan joins the recipe's plan."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext, data_digests, file_digest

NAME, READS = "search", ("source",)


def settings(ctx: RunContext) -> dict[str, Any] | None:
    section = ctx.recipe.search
    if section is None:
        return None
    files = data_digests(section)
    if section.data:
        files["data"] = file_digest(Path(section.data))
    return {**section.model_dump(exclude={"seegull", "wikitext", "data"}), **files}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.engines.loading import load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.search.report import summary_lines
    from editor.methods.search.run import run_search

    source = ctx.path("source")
    report = run_search(
        ctx.load_model(source),
        load_tokenizer(source),
        Checkpoint.open(source).info(),
        out,
        ctx.recipe.search,
        progress=ctx.progress,
    )
    return {
        "path": str(ctx.run_dir / "search"),
        "trials": len(report.trials),
        "minutes": round(report.seconds / 60, 2),
        "chosen": asdict(report.chosen) if report.chosen else None,
        "held_out": {
            "base": asdict(report.base) if report.base else None,
            "export": asdict(report.export) if report.export else None,
        },
        "summary": summary_lines(report),
        "figures": ["pareto.png"],
    }


def numbers(result: dict[str, Any]) -> str:
    chosen = result["chosen"]
    head = f"{result['trials']} trials in {result['minutes']:.1f} min"
    if chosen is None:
        return head + "; none lowers the bias inside the budget"
    return (
        head
        + f"; chosen {chosen['label']}: select-fold bias left {chosen['bias']:.0%}, perplexity {chosen['damage']:+.1%}"
    )
