"""Stage `steer`: steering vectors, the hooked sweep, and one plan per bake (the recipe's method picks one)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext, data_digests, file_digest

NAME, READS = "steer", ("source",)


def settings(ctx: RunContext) -> dict[str, Any] | None:
    section = ctx.recipe.steer
    if section is None:
        return None
    # The method only picks which plan goes on, so it belongs to the plan stage: switching it costs no new sweep.
    values = section.model_dump(exclude={"method", "seegull", "wikitext", "data"})
    files = {**data_digests(section), "data": file_digest(section.data)}
    return {**values, **files}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.engines.loading import load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.steer.sweep import run_steer

    source = ctx.path("source")
    report = run_steer(
        ctx.load_model(source),
        load_tokenizer(source),
        Checkpoint.open(source).info(),
        out,
        ctx.recipe.steer,
        progress=ctx.progress,
    )
    return {
        "path": str(ctx.run_dir / "steer"),
        "base_gap": report.base_gap,
        "base_perplexity": report.base_perplexity,
        "chosen": {m: (asdict(p) if p is not None else None) for m, p in report.chosen.items()},
        "figures": [name for name in ("probe_accuracy.png", "pareto.png") if (out / name).is_file()],
    }


def numbers(result: dict[str, Any]) -> str:
    parts = [f"base gap {result['base_gap']:.3f}, ppl {result['base_perplexity']:.2f}"]
    for method, p in result["chosen"].items():
        if p is None:
            parts.append(f"{method}: none within budget")
        else:
            parts.append(
                f"{method}: L{p['layer']} a={p['alpha']:g} gap {p['gap']:.3f} ppl {p['perplexity'] / result['base_perplexity'] - 1:+.1%}"
            )
    return "; ".join(parts)
