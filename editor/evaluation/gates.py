"""Damage gates: the largest drop a recipe allows per metric (``eval.max_drop``), checked against base vs model.

A key is one of the project's own damage metrics or an lm-eval task of the run:

- ``perplexity_pct``: WikiText-2 perplexity rise, in percent of the base's;
- ``first_token_kl``: first-token KL against the base (nats), a ceiling;
- ``TASK``: every metric lm-eval reports for that task or group (e.g. ``mmlu``), in the metric's own units
  (accuracy 0-1); ``TASK.METRIC`` names one of them (e.g. ``hellaswag.acc_norm``).

A drop is a change for the worse in the metric's own direction (lm-eval says which way is better), so a gate
on a lower-is-better metric limits its rise. A gate fails when the drop is larger than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from editor.errors import EditorError

OWN_GATES = {
    "perplexity_pct": "WikiText-2 perplexity rise (%)",
    "first_token_kl": "first-token KL vs base (nats)",
}


@dataclass
class GateResult:
    key: str  # as written in max_drop
    label: str  # what was measured, for tables
    base: float | None
    model: float | None
    drop: float  # change for the worse; negative: the model is better
    limit: float
    passed: bool


def check_keys(max_drop: dict[str, float], lm_tasks: set[str], *, has_base: bool = True) -> None:
    """Refuse gates without a base, or a key that names nothing this evaluation measures; before any model loads."""
    if max_drop and not has_base:
        raise EditorError(
            "eval.max_drop: a damage gate compares with the base model; give --base (or evaluate an export)"
        )
    for key in max_drop:
        task = key if key in lm_tasks else key.rpartition(".")[0]
        if key not in OWN_GATES and task not in lm_tasks:
            measured = sorted(OWN_GATES) + sorted(lm_tasks)
            raise EditorError(
                f"eval.max_drop: {key!r} names no metric of this evaluation; keys: {', '.join(measured)} "
                "(an lm-eval task, or TASK.METRIC, must also be listed in lm_eval)"
            )


def _own(key: str, limit: float, likelihood: dict[str, Any]) -> GateResult:
    base, model = likelihood["base"], likelihood["model"]
    if key == "perplexity_pct":
        before, after = base["perplexity"], model["perplexity"]
        drop = (after / before - 1.0) * 100.0
    else:
        before, after = None, model["first_token_kl"]
        drop = after
    return GateResult(key, OWN_GATES[key], before, after, drop, limit, drop <= limit)


def _lm_eval(key: str, limit: float, rows: list[dict[str, Any]]) -> list[GateResult]:
    by_task = [r for r in rows if r["task"] == key]
    task, _, metric = key.rpartition(".")
    chosen = by_task or [r for r in rows if r["task"] == task and r["metric"] == metric]
    results = []
    for r in chosen:
        if r["change"] is None or r["higher_is_better"] is None:
            continue
        drop = -r["change"] if r["higher_is_better"] else r["change"]
        label = f"{r['task']} {r['metric']}" + ("" if r["filter"] == "none" else f" ({r['filter']})")
        results.append(GateResult(key, label, r["base"], r["model"], drop, limit, drop <= limit))
    if not results:
        raise EditorError(
            f"eval.max_drop: {key!r}: lm-eval reported no metric with a direction to compare for it; "
            "name one metric as TASK.METRIC"
        )
    return results


def check_gates(
    max_drop: dict[str, float] | None, likelihood: dict[str, Any], lm_rows: list[dict[str, Any]]
) -> list[GateResult]:
    """Every gate's outcome (``likelihood`` as stored in JSON: role -> metrics, ``lm_rows`` as lm_eval.compare)."""
    results: list[GateResult] = []
    for key, limit in (max_drop or {}).items():
        if key in OWN_GATES:
            results.append(_own(key, limit, likelihood))
        else:
            results += _lm_eval(key, limit, lm_rows)
    return results


def failures(gates: list[dict[str, Any]]) -> list[str]:
    """One phrase per failed gate (``gates`` as stored in eval.json or a manifest)."""
    return [
        f"{g['label']}: drop {g['drop']:.4g} > allowed {g['limit']:g} (max_drop.{g['key']})"
        for g in gates
        if not g["passed"]
    ]


def gates_table(gates: list[dict[str, Any]]) -> str:
    """Markdown: one row per gate, its numbers and PASS or FAIL."""
    lines = ["| damage gate | base | this model | drop | allowed | result |", "|---|---|---|---|---|---|"]
    for g in gates:
        base = "–" if g["base"] is None else f"{g['base']:.4g}"
        model = "–" if g["model"] is None else f"{g['model']:.4g}"
        result = "pass" if g["passed"] else "**FAIL**"
        lines.append(
            f"| {g['label']} (`max_drop.{g['key']}`) | {base} | {model} | {g['drop']:+.4g} | {g['limit']:g} | {result} |"
        )
    return "\n".join(lines) + "\n"
