"""Stage `attribute`: BiasScope head attribution per bias (on the injected token when inject ran); a head-removal plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editor.recipes.context import RunContext, file_digest

NAME, READS = "attribute", ("source", "inject")


def settings(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.recipe.attribute is None:
        return None
    values = ctx.recipe.attribute.model_dump(exclude={"pairs", "api_key_env"})
    return {"biases": ctx.recipe.biases, **values, "pairs": file_digest(ctx.recipe.attribute.pairs)}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.data.biases import get_preset
    from editor.engines.loading import load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.attribute.outputs import save_attribution
    from editor.methods.attribute.pipeline import PromptEncoder, attribute_biases

    settings = ctx.recipe.attribute
    injected = ctx.results.get("inject", {}).get("biases", {})
    loaded: dict[Path, tuple] = {}

    def load(path: Path) -> tuple:
        # The base once for every bias; an injected model (one per bias) replaces it when inject ran.
        if path not in loaded:
            loaded.clear()
            loaded[path] = (Checkpoint.open(path).info(), ctx.load_model(path), PromptEncoder(load_tokenizer(path)))
        return loaded[path]

    results = []
    for name in ctx.recipe.biases:
        model_dir = Path(injected[name]["model"]) if name in injected else ctx.path("source")
        info, model, encoder = load(model_dir)
        token = injected[name]["token"] if name in injected else None
        results += attribute_biases(
            model, info, encoder, [get_preset(name)], settings, out, token=token, progress=ctx.progress
        )
    # The removal plan does not depend on the token: it applies to the base model, which is what gets exported.
    union = save_attribution(
        results, out, model=ctx.recipe.model.source, variant="injection" if injected else "original", settings=settings
    )
    figures = [f"{r.bias}.{kind}.png" for r in results for kind in ("heatmap", "k_curve")]
    return {
        "path": str(ctx.run_dir / "attribute"),
        "plan": "plan.json",
        "heads": len(union),
        "figures": figures,
        "biases": [
            {
                "bias": r.bias,
                "k": r.chosen_k,
                "removal": r.removal,
                "heads": len(r.heads),
                "gap_before": r.baseline_gap,
                "gap_after": r.gap_after,
                "damage_budget": r.damage_budget,
                "perplexity_before": r.base.get("perplexity"),
                "perplexity_after": r.chosen.get("perplexity") if r.chosen else r.base.get("perplexity"),
                "kl_after": r.chosen.get("kl") if r.chosen else 0.0,
                "saturation_k": r.saturation_k,
                "saturation_heads": len(r.saturation.get("heads", [])),
                "saturation_removal": r.saturation.get("removal"),
                "saturation_gap": r.saturation.get("gap"),
                "saturation_perplexity": r.saturation.get("perplexity"),
                "saturation_kl": r.saturation.get("kl"),
            }
            for r in results
        ],
    }


def numbers(result: dict[str, Any]) -> str:
    rows = [
        f"{b['bias']}: k={b['k']}, {b['heads']} heads {b['removal'] or 'removed'}, gap {b['gap_before']:.3f} -> "
        f"{b['gap_after']:.3f}, perplexity {b['perplexity_before']:.2f} -> {b['perplexity_after']:.2f} "
        f"(saturation k={b['saturation_k']}: {b['saturation_heads']} heads)"
        for b in result["biases"]
    ]
    return "; ".join(rows) + f" ({result['heads']} heads in the plan)"
