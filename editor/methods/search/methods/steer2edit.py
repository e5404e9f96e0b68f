"""steer2edit: a contrast's vector turned into rank-1 edits of single heads and neurons (``steer.steer2edit``)."""

from __future__ import annotations

from editor.edits import Edit
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.vectors import VectorMethod, suggest_block_vector
from editor.methods.steer.steer2edit import steer2edit_plan

# The share of the class difference to cancel (measured on SmolLM2 with `wedit steer`'s sweep).
EDIT_ALPHA = (0.01, 0.4)


class Steer2EditSearch(VectorMethod):
    name = "steer2edit"
    summary = "a contrast's vector as rank-1 edits of the heads and neurons that carry it (Steer2Edit)"

    needs_stats = True

    def suggest(self, trial, state: SearchContext) -> list[Edit]:
        layer, contrast, vector = suggest_block_vector(trial, state)
        alpha = trial.suggest_float("edit_alpha", *EDIT_ALPHA, log=True)
        return list(steer2edit_plan(state.activations(contrast), state.info, state.stats(), vector, layer, alpha))
