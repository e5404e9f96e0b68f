"""Bias against damage, one rule for every method that sweeps or searches: the Pareto front, the choice inside
the damage budgets, and the picture. The steering sweep, BiasScope's k sweep and the search all use it.

The choice: among points inside the budgets, those that lower the bias by at least ``MIN_GAIN`` of its size and
end closer to zero than they started (a strongly negative gap is the stereotype reversed, not removed); of
those, the bias closest to zero wins, ties to less damage and then to the caller's own tie-break.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

import numpy as np

T = TypeVar("T")
MIN_GAIN = 0.05  # a point must remove at least this share of the bias to be chosen: noise is not a debiasing


def pareto_mask(costs: Sequence[Sequence[float]], feasible: Sequence[bool] | None = None) -> list[bool]:
    """Per point (every cost minimised): feasible, and no feasible point is at least as good on every cost and
    better on one. ``feasible`` None: every point is."""
    values = np.asarray(costs, dtype=float).reshape(len(costs), -1)
    ok = np.ones(len(values), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    mask = []
    for i, point in enumerate(values):
        others = values[ok]
        dominated = np.any(np.all(others <= point, axis=1) & np.any(others < point, axis=1))
        mask.append(bool(ok[i] and not dominated))
    return mask


@dataclass(frozen=True)
class Rule(Generic[T]):
    """How points are judged: the bias each leaves (signed, 0 = none) against the baseline's, the damage each does
    (relative perplexity rise; None where not measured) against the budget, and any other condition to meet."""

    baseline: float
    bias: Callable[[T], float]
    damage: Callable[[T], float | None]
    budget: float
    inside: Callable[[T], bool] = lambda point: True

    def eligible(self, points: Sequence[T]) -> list[T]:
        """The points inside the budgets that lower the bias by ``MIN_GAIN`` of the baseline's size and end
        closer to zero than the baseline."""
        needed = self.baseline - MIN_GAIN * abs(self.baseline)
        out = []
        for point in points:
            cost = self.damage(point)
            if cost is None or cost > self.budget or not self.inside(point):
                continue
            value = self.bias(point)
            if value <= needed and abs(value) < abs(self.baseline):
                out.append(point)
        return out

    def choose(self, points: Sequence[T], tie: Callable[[T], tuple] = lambda point: ()) -> T | None:
        """The eligible point with the bias closest to zero; ties to less damage, then to ``tie``."""
        return min(self.eligible(points), key=lambda p: (abs(self.bias(p)), self.damage(p), *tie(p)), default=None)


@dataclass(frozen=True)
class PlotPoint:
    """One point of a trade-off picture: its damage (x) and bias (y), its series, and how it is drawn."""

    x: float
    y: float
    series: str
    faded: bool = False  # over a budget
    front: bool = False  # on the Pareto front


@dataclass(frozen=True)
class Marked:
    """A point named on the picture: a chosen point (a gold star, named beside it), the base (a black star in the
    legend) or a note (its name beside it only)."""

    x: float
    y: float
    label: str
    style: Literal["chosen", "base", "note"] = "chosen"


def tradeoff_figure(
    path: Path,
    points: Sequence[PlotPoint],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    budget_x: float,
    budget_label: str,
    marked: Sequence[Marked] = (),
    front_line: bool = False,
    clip: tuple[float, float] | None = None,
    hline: float | None = None,
) -> Path:
    """Bias against damage, one marker per series; the Pareto front ringed (or joined with ``front_line``); the
    budget as a dashed line. With ``clip`` (x, y), points beyond are drawn on the edge and counted in the title:
    one trial that wrecks the model must not squash every other point against the budget line."""
    from editor.io.figures import figure

    def at(p: PlotPoint) -> tuple[float, float]:
        return (min(p.x, clip[0]), min(p.y, clip[1])) if clip else (p.x, p.y)

    beyond = sum(p.x > clip[0] or p.y > clip[1] for p in points) if clip else 0
    with figure(path, (6.5, 4.2)) as (_fig, ax):
        for series, marker in zip(dict.fromkeys(p.series for p in points), "osD^v<>p*h"):
            mine = [p for p in points if p.series == series]
            xy = [at(p) for p in mine]
            ax.scatter(
                [x for x, _ in xy],
                [y for _, y in xy],
                marker=marker,
                label=series,
                alpha=[0.35 if p.faded else 1.0 for p in mine],
            )
            front = [at(p) for p in mine if p.front]
            if front and not front_line:
                xs, ys = [x for x, _ in front], [y for _, y in front]
                ax.scatter(xs, ys, marker=marker, s=90, facecolors="none", edgecolors="black")
        if front_line:
            front = sorted((p for p in points if p.front), key=lambda p: p.x)
            ax.plot([p.x for p in front], [p.y for p in front], color="black", lw=1, label="Pareto front")
        for mark in marked:
            if mark.style == "base":
                ax.scatter([mark.x], [mark.y], marker="*", s=150, color="black", label=mark.label)
                continue
            if mark.style == "chosen":
                ax.scatter([mark.x], [mark.y], marker="*", s=220, color="gold", edgecolors="black", label="chosen")
            ax.annotate(mark.label, (mark.x, mark.y), fontsize=6, xytext=(4, -10), textcoords="offset points")
        ax.axvline(budget_x, color="grey", ls="--", label=budget_label)
        if hline is not None:
            ax.axhline(hline, color="grey", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        edge = f"; {beyond} beyond the axes, drawn on their edge" if beyond else ""
        ax.set_title(title + edge, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return path
