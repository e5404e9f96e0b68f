"""residual_add: a contrast's class difference subtracted from the stream at one block and site."""

from __future__ import annotations

from editor.edits import Edit, ResidualAdd
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.vectors import ADD_SITE, VectorMethod, suggest_add


class ResidualAddSearch(VectorMethod):
    name = "residual_add"
    summary = "a contrast's class difference subtracted from the stream at one block and site"

    def suggest(self, trial, state: SearchContext) -> list[Edit]:
        return residual_add_edits(trial, state)


def residual_add_edits(trial, context: SearchContext) -> list[Edit]:
    """One residual add: a block, a site, a contrast and a strength (shared with heads+residual_add)."""
    layer = trial.suggest_categorical("layer", context.layers)
    site, contrast, alpha = suggest_add(trial, context)
    vector = context.vectors(contrast, site)[layer]
    return [ResidualAdd(layer=layer, site=ADD_SITE[site], vector=vector.tolist(), scale=-alpha)]
