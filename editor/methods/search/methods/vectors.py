"""What the four vector methods share: the contrasts' activations captured before the first trial, and the
strength of an add drawn with its site and contrast."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from editor.methods.search.context import SearchContext
from editor.methods.search.methods.base import SearchMethod

if TYPE_CHECKING:
    import torch

# A residual add's strength, in units of the class difference (measured on SmolLM2 with `wedit steer`'s sweep).
ADD_ALPHA = (0.05, 2.0)
# Where a vector measured at a site is added back: the stream after the block and the MLP's output both enter
# the stream at the MLP's output (its bias); the stream after attention at the attention's output.
ADD_SITE = {"block": "mlp", "mlp": "mlp", "attn": "attn"}


class VectorMethod(SearchMethod):
    """A method whose trials read a contrast's vectors (and, with ``needs_stats``, the ordinary-text moments)."""

    needs_stats: ClassVar[bool] = False

    def prepare(self, context: SearchContext) -> SearchContext:
        return capture_contrasts(context, stats=self.needs_stats)


def capture_contrasts(context: SearchContext, *, stats: bool = False) -> SearchContext:
    """Every contrast's activations, captured before the first trial (each once per search, however many methods
    read them), and the ordinary-text moments when asked."""
    if stats:
        context.stats()
    for contrast in context.settings.contrasts:
        context.activations(contrast)
    return context


def suggest_add(trial, context: SearchContext) -> tuple[str, str, float]:
    """The site, contrast and strength of an add."""
    site = trial.suggest_categorical("site", list(context.settings.sites))
    contrast = trial.suggest_categorical("contrast", list(context.settings.contrasts))
    return site, contrast, trial.suggest_float("add_alpha", *ADD_ALPHA, log=True)


def suggest_block_vector(trial, context: SearchContext) -> tuple[int, str, torch.Tensor]:
    """A block and a contrast, drawn in that order, and the contrast's class difference after that block."""
    layer = trial.suggest_categorical("layer", context.layers)
    contrast = trial.suggest_categorical("contrast", list(context.settings.contrasts))
    return layer, contrast, context.vectors(contrast, "block")[layer]
