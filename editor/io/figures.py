"""PNG figures for people who would rather look than read. matplotlib, headless."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def figure(
    path: Path, figsize: tuple[float, float], rows: int = 1, cols: int = 1, dpi: int = 120
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(fig, axes)`` of a new headless matplotlib figure; on exit it is laid out and saved to ``path``
    (atomically) and closed, also after an error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from editor.io.atomic import replace_file

    fig, axes = plt.subplots(rows, cols, figsize=figsize)
    try:
        yield fig, axes
        fig.tight_layout()
        replace_file(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def head_heatmap(scores: np.ndarray, path: Path, title: str, chosen: Sequence[tuple[int, int]] = ()) -> Path:
    """Layers x heads heatmap of mean attribution; chosen heads boxed."""
    from matplotlib.patches import Rectangle

    layers, heads = scores.shape
    with figure(path, (max(4, 0.45 * heads + 2), max(4, 0.22 * layers + 1.5))) as (fig, ax):
        limit = float(np.abs(scores).max()) or 1.0
        image = ax.imshow(scores, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", origin="lower")
        for layer, head in chosen:
            ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(heads))
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, label="mean Δ logit (biased − unbiased answer)")
    return path


def line_plot(xs, ys, path: Path, *, xlabel: str, ylabel: str, title: str, mark_x=None) -> Path:
    with figure(path, (6, 3.6)) as (_fig, ax):
        _line(ax, xs, ys, xlabel=xlabel, ylabel=ylabel, title=title, mark_x=mark_x)
    return path


def _line(ax, xs, ys, *, xlabel: str, ylabel: str, title: str, mark_x=None) -> None:
    ax.plot(xs, ys, marker="o", markersize=3)
    if mark_x is not None:
        ax.axvline(mark_x, color="grey", linestyle="--", label=f"chosen: {mark_x}")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
