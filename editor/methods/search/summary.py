"""What a user reads after a search: trials and time, the choice, and held-out numbers beside the base."""

from __future__ import annotations


def summary_lines(report) -> list[str]:
    """What a user reads after a search: trials and time, the choice, and the held-out numbers beside the base."""
    feasible = sum(t.feasible for t in report.trials)
    lines = [
        f"search: {len(report.trials)} trials in {report.seconds / 60:.1f} min, {feasible} inside the budget "
        f"(perplexity +{100 * report.damage_budget:g}%, KL {report.kl_budget:g})"
    ]
    chosen = report.chosen
    if chosen is None:
        lines.append("no trial lowers the select-fold bias by 5% inside the budget; see search.json and pareto.png")
        return lines + method_table(report)
    lines.append(
        f"chosen: trial {chosen.number}, {chosen.label}: select-fold bias left {chosen.bias:.0%}, "
        f"perplexity {chosen.damage:+.1%}, KL {chosen.kl:.3f}"
    )
    base, export = report.base, report.export
    for fold in ("build", "test"):
        b, e = base.folds[fold], export.folds[fold]
        name = "in-distribution (build)" if fold == "build" else "held out (test)"
        lines.append(
            f"{name}: gap {b.gap:+.3f} -> {e.gap:+.3f} ({_change(b.gap, e.gap)}), pairwise preference "
            f"{b.preference:.1%} -> {e.preference:.1%}, LM score {b.lm_score:.1%} -> {e.lm_score:.1%}"
        )
    lines.append(
        f"damage on unseen text: perplexity {base.perplexity:.2f} -> {export.perplexity:.2f} "
        f"({export.perplexity / base.perplexity - 1:+.1%}), KL {export.kl:.3f}, concept retention "
        f"{base.retention:.0%} -> {export.retention:.0%}"
    )
    return lines + method_table(report)


def method_table(report) -> list[str]:
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


def _row(label: str, m, base) -> str:
    build, test = m.folds["build"], m.folds["test"]
    b_build, b_test = base.folds["build"], base.folds["test"]

    def change(before: float, after: float, digits: int = 0) -> str:  # the base's own row: its numbers only
        return "" if m is base else f" ({after / before - 1:+.{digits}%})" if abs(before) > 1e-9 else " (n/a)"

    return (
        f"| {label} | {build.gap:+.3f}{change(b_build.gap, build.gap)} | {build.preference:.1%} | "
        f"{test.gap:+.3f}{change(b_test.gap, test.gap)} | {test.preference:.1%} | {test.lm_score:.1%} | "
        f"{m.perplexity:.2f}{change(base.perplexity, m.perplexity, 1)} | {m.kl:.3f} | {m.retention:.0%} |"
    )


def _change(before: float, after: float) -> str:
    return f"{after / before - 1:+.0%}" if abs(before) > 1e-9 else "n/a"
