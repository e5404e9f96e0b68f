"""Stage `plan`: the attribution's removed heads, then the chosen steering plan, the fit's plan and the search's plan,
as one plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.io.atomic import write_text
from editor.recipes.context import RunContext

NAME, READS = "plan", ("attribute", "steer", "fit", "search")


def settings(ctx: RunContext) -> dict[str, Any]:
    return {"steer_method": ctx.recipe.steer.method if ctx.recipe.steer else None}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.core.plan import Plan, load_plan

    edits, parts = [], {}
    if "attribute" in ctx.results:
        # Removed heads first: the bake masks a writer's input before changing its output, as the hooks do.
        attribute = load_plan(ctx.path("attribute") / ctx.results["attribute"]["plan"])
        edits += attribute.edits
        parts["attribute"] = len(attribute.edits)
    if "steer" in ctx.results:
        method = ctx.recipe.steer.method
        if ctx.results["steer"]["chosen"].get(method) is None:
            raise EditorError(
                f"{ctx.recipe_path}: steer.method {method}: no sweep point lowers the bias within the damage budget "
                f"(see {ctx.path('steer')}/sweep.json); raise steer.damage_budget, try other steer.alphas, or pick another method"
            )
        steer = load_plan(ctx.path("steer") / f"plan_{method}.json")
        edits += steer.edits
        parts[f"steer ({method})"] = len(steer.edits)
    if "fit" in ctx.results:
        fitted = load_plan(ctx.path("fit") / "plan.json")
        edits += fitted.edits
        parts[f"fit ({ctx.results['fit']['method']})"] = len(fitted.edits)
    if "search" in ctx.results:
        if ctx.results["search"]["chosen"] is None:
            raise EditorError(
                f"{ctx.recipe_path}: search: no trial lowers the bias within the damage budget (see "
                f"{ctx.path('search')}/search.json and pareto.png); raise search.trials or search.damage_budget"
            )
        found = load_plan(ctx.path("search") / "plan.json")
        edits += found.edits
        parts["search"] = len(found.edits)
    if not edits:
        raise EditorError(
            f"{ctx.recipe_path}: the attribute and steer stages produced no edits; there is nothing to export "
            "(attribute removes heads only where a k lowers the bias within attribute.damage_budget: see "
            f"{ctx.path('attribute')}/summary.json)"
        )
    write_text(out / "plan.json", Plan(edits=edits).to_json() + "\n")
    kinds: dict[str, int] = {}
    for edit in edits:
        kinds[edit.kind] = kinds.get(edit.kind, 0) + 1
    return {"path": str(ctx.run_dir / "plan"), "edits": len(edits), "parts": parts, "kinds": kinds}


def numbers(result: dict[str, Any]) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in result["kinds"].items())
    return f"{result['edits']} edits ({kinds}) from " + ", ".join(f"{k}: {n}" for k, n in result["parts"].items())
