"""Stage `eval`: bias and damage metrics of base and export, recorded in the export's manifest and card."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from editor.evaluation.gates import failures
from editor.evaluation.settings import EvalSettings
from editor.recipes.context import RunContext, data_digests, file_digest

NAME, READS = "eval", ("source", "export")


def eval_settings(ctx: RunContext) -> EvalSettings | None:
    """The recipe's eval section; its biases default to the recipe's own."""
    section = ctx.recipe.eval
    if section is None:
        return None
    return section if section.biases else section.model_copy(update={"biases": list(ctx.recipe.biases)})


def settings(ctx: RunContext) -> dict[str, Any] | None:
    from editor.evaluation.lm_eval import task_files_digest

    section = eval_settings(ctx)
    if section is None:
        return None
    section.check_machine()  # refuses what this machine cannot do, before any stage runs
    # Settings that do not change the numbers stay out of the key: where the data files are (their contents count),
    # how many judge requests run at once, which variable holds the key.
    values = section.model_dump(exclude={"seegull", "wikitext", "pairs_csv", "judge_workers", "api_key_env"})
    files = {
        **data_digests(section),
        "pairs_csv": file_digest(section.pairs_csv),
        "lm_eval_files": task_files_digest(section.lm_eval or []),  # a task YAML's folder: its data and loader
    }
    return {**values, **files}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.evaluation.run import record_eval, run_eval

    export = ctx.path("export")
    # run_eval builds its own directory beside `out` and renames it over `out`: force replaces the empty one.
    report = run_eval(export, ctx.path("source"), out, eval_settings(ctx), force=True, progress=ctx.progress)
    record_eval(export, report, out / "eval.png")
    rows = {role: asdict(m) for role, m in report.likelihood.items()}
    judged = [
        {"role": c.role, "condition": c.condition, "mean_strength": c.mean_strength, "parse_failures": c.parse_failures}
        for c in report.generation
    ]
    lm_rows = [r for r in (report.lm_eval or {}).get("rows", []) if r["top_level"]]
    return {
        "path": str(ctx.run_dir / "eval"),
        "likelihood": rows,
        "generation": judged,
        "durations": report.durations,
        "lm_eval": lm_rows,
        "gates": [asdict(g) for g in report.gates],
    }


def numbers(result: dict[str, Any]) -> str:
    like = result["likelihood"]
    base, model = like.get("base"), like["model"]
    parts = []
    for key, label, fmt in (("association_gap", "association gap", ".3f"), ("perplexity", "perplexity", ".2f")):
        parts.append(
            f"{label} {format(base[key], fmt)} -> {format(model[key], fmt)}"
            if base
            else f"{label} {format(model[key], fmt)}"
        )
    if model.get("first_token_kl") is not None:
        parts.append(f"KL {model['first_token_kl']:.3f}")
    for row in result["generation"]:
        if row["condition"] == "plain" and row["mean_strength"] is not None:
            parts.append(f"judge {row['role']} {row['mean_strength']:.2f}")
    for row in result.get("lm_eval", []):
        before = "" if row["base"] is None else f"{row['base']:.3f} -> "
        parts.append(f"{row['task']} {row['metric']} {before}{row['model']:.3f}")
    failed = failures(result.get("gates", []))
    if failed:
        parts.append("[bold red]FAILS damage gate[/]: " + "; ".join(failed))
    elif result.get("gates"):
        parts.append("damage gates pass")
    return "; ".join(parts)
