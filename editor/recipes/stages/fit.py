"""Stage `fit`: one trained fit (erase_identity or unlink_mlp) on the build fold; its plan joins the recipe's plan."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext, data_digests

NAME, READS = "fit", ("source",)


def settings(ctx: RunContext) -> dict[str, Any] | None:
    section = ctx.recipe.fit
    if section is None:
        return None
    return {**section.model_dump(exclude={"seegull", "wikitext"}), **data_digests(section)}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.engines.loading import load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit.run import run_fit, summary_lines

    source = ctx.path("source")
    section = ctx.recipe.fit
    report = run_fit(
        ctx.load_model(source),
        load_tokenizer(source),
        Checkpoint.open(source).info(),
        out,
        section,
        progress=ctx.progress,
    )
    return {
        "path": str(ctx.run_dir / "fit"),
        "method": report.method,
        "minutes": round(report.fit_seconds / 60, 2),
        "chosen": {"label": f"{report.method} x={report.scale:g}"},
        "edits": report.edits,
        "held_out": (
            {"base": asdict(report.base), "export": asdict(report.fitted)} if report.base and report.fitted else {}
        ),
        "summary": summary_lines(report),
        "figures": ["losses.png"],
    }


def numbers(result: dict[str, Any]) -> str:
    fitted = f"{result['chosen']['label']} fitted in {result['minutes']:.1f} min: {result['edits']} edits"
    if not result["held_out"]:
        return fitted + "; held-out report left to the eval stage"
    base, edited = result["held_out"]["base"]["folds"]["test"], result["held_out"]["export"]["folds"]["test"]
    return (
        f"{fitted}; held-out gap {base['gap']:+.3f} -> {edited['gap']:+.3f}, pairwise {base['preference']:.1%} -> "
        f"{edited['preference']:.1%}"
    )
