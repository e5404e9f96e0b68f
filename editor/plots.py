"""PNG figures for people who would rather look than read. matplotlib, headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def head_heatmap(scores: np.ndarray, path: Path, title: str, chosen: list[tuple[int, int]] = ()) -> Path:
    """Layers x heads heatmap of mean attribution; chosen heads boxed."""
    plt = _plt()
    layers, heads = scores.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * heads + 2), max(4, 0.22 * layers + 1.5)))
    limit = float(np.abs(scores).max()) or 1.0
    image = ax.imshow(scores, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", origin="lower")
    for layer, head in chosen:
        ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(heads))
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="mean Δ logit (biased − unbiased answer)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_plot(xs, ys, path: Path, *, xlabel: str, ylabel: str, title: str, mark_x=None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(xs, ys, marker="o", markersize=3)
    if mark_x is not None:
        ax.axvline(mark_x, color="grey", linestyle="--", label=f"chosen: {mark_x}")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
