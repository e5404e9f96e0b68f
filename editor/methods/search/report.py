"""What a search leaves: every trial with its scores, the choice, the held-out numbers beside the base,
``search.json``, the Pareto picture and the lines a user reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from editor.evaluation.heldout import FoldScores, Measured, comparison_lines
from editor.io.atomic import write_text
from editor.methods.tradeoff import Marked, PlotPoint, tradeoff_figure


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    label: str
    bias: float  # remaining share of the select fold's bias (1 = unchanged)
    damage: float  # relative perplexity rise
    gap: float
    frame_nats: float
    preference: float
    lm_score: float | None
    perplexity: float
    kl: float
    edits: int
    feasible: bool
    pareto: bool = False


@dataclass
class SearchReport:
    base_select: FoldScores
    base_perplexity: float
    trials: list[TrialResult] = field(default_factory=list)
    chosen: TrialResult | None = None
    base: Measured | None = None
    export: Measured | None = None
    # method -> its best feasible trial (number) measured like the chosen plan; filled with report_methods
    per_method: dict[str, tuple[int, Measured]] = field(default_factory=dict)
    seconds: float = 0.0  # the search, the choice and its held-out measurement
    report_seconds: float = 0.0  # the per-method measurements (report_methods)
    damage_budget: float = 0.02
    kl_budget: float = 0.05
    # trials whose edits this architecture cannot hold (their method -> the bake's refusal), left out of the study
    refused: dict[str, str] = field(default_factory=dict)


def summary_lines(report: SearchReport) -> list[str]:
    """What a user reads after a search: trials and time, the choice, and the held-out numbers beside the base."""
    feasible = sum(t.feasible for t in report.trials)
    lines = [
        f"search: {len(report.trials)} trials in {report.seconds / 60:.1f} min, {feasible} inside the budget "
        f"(perplexity +{100 * report.damage_budget:g}%, KL {report.kl_budget:g})"
    ]
    chosen = report.chosen
    lines += [f"{method}: trials refused by this architecture ({why})" for method, why in report.refused.items()]
    if chosen is None:
        lines.append("no trial lowers the select-fold bias by 5% inside the budget; see search.json and pareto.png")
        return lines + method_table(report)
    lines.append(
        f"chosen: trial {chosen.number}, {chosen.label}: select-fold bias left {chosen.bias:.0%}, "
        f"perplexity {chosen.damage:+.1%}, KL {chosen.kl:.3f}"
    )
    assert report.base is not None and report.export is not None
    return lines + comparison_lines(report.base, report.export) + method_table(report)


def method_table(report: SearchReport) -> list[str]:
    """With ``report_methods``: each method's best trial, in-distribution and held out, as a markdown table."""
    if not report.per_method or report.base is None:
        return []
    labels = {t.number: t.label for t in report.trials}
    lines = [
        f"each method's best trial inside the budget, measured like the chosen plan ({report.report_seconds / 60:.1f} min):",
        "",
        "| method (best trial inside the budget) | build gap | build pairwise | test gap | test pairwise | "
        "test LM score | perplexity | KL | retention |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("base", report.base, report.base),
    ]
    for number, measured in sorted(report.per_method.values(), key=lambda nm: nm[1].folds["test"].gap):
        lines.append(_row(f"{labels[number]} (trial {number})", measured, report.base))
    return lines


def _row(label: str, m: Measured, base: Measured) -> str:
    build, test = m.folds["build"], m.folds["test"]
    b_build, b_test = base.folds["build"], base.folds["test"]

    def change(before: float, after: float, digits: int = 0) -> str:  # the base's own row: its numbers only
        return "" if m is base else f" ({after / before - 1:+.{digits}%})" if abs(before) > 1e-9 else " (n/a)"

    return (
        f"| {label} | {build.gap:+.3f}{change(b_build.gap, build.gap)} | {build.preference:.1%} | "
        f"{test.gap:+.3f}{change(b_test.gap, test.gap)} | {test.preference:.1%} | {test.lm_score:.1%} | "
        f"{m.perplexity:.2f}{change(base.perplexity, m.perplexity, 1)} | {m.kl:.3f} | {m.retention:.0%} |"
    )


def write_outputs(out: Path, report: SearchReport, settings) -> None:
    data = {**asdict(report), "settings": settings.model_dump()}
    write_text(out / "search.json", json.dumps(data, indent=1, default=float) + "\n")
    pareto_figure(report, out / "pareto.png")


def pareto_figure(report: SearchReport, path: Path) -> None:
    # A trial that wrecks the model (+40,000% perplexity happens) would squash every other point against the
    # budget line: the axes stop a little past the budget and what lies beyond is drawn on the edge.
    x_edge = max(500 * report.damage_budget, *(120 * t.damage for t in report.trials if t.feasible), 1.0)
    points = [
        PlotPoint(100 * t.damage, t.bias, t.params["method"], faded=not t.feasible, front=t.pareto)
        for t in sorted(report.trials, key=lambda t: t.params["method"])
    ]
    chosen = report.chosen
    tradeoff_figure(
        path,
        points,
        xlabel="WikiText-2 perplexity change (%)",
        ylabel="select-fold bias left (1 = base)",
        title=f"search: {len(report.trials)} trials (faded: over a budget)",
        budget_x=100 * report.damage_budget,
        budget_label=f"+{report.damage_budget:.0%} budget",
        marked=[Marked(100 * chosen.damage, chosen.bias, chosen.label)] if chosen else [],
        front_line=True,
        clip=(x_edge, 1.5),
        hline=1.0,
    )
