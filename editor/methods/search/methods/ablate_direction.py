"""ablate_direction: a contrast's whitened class difference projected out of every residual write."""

from __future__ import annotations

from editor.edits import Edit
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.vectors import VectorMethod, suggest_block_vector
from editor.methods.steer.directions import ablation_plan, whitened_direction

# The whitening ridge, in units of the ordinary-text moment's mean eigenvalue (see steer.directions.whitened).
RIDGE = (0.003, 0.3)


class AblateDirectionSearch(VectorMethod):
    name = "ablate_direction"
    summary = "a contrast's whitened class difference projected out of every residual write and the embeddings"

    needs_stats = True

    def suggest(self, trial, state: SearchContext) -> list[Edit]:
        layer, _, vector = suggest_block_vector(trial, state)
        ridge = trial.suggest_float("ridge", *RIDGE, log=True)
        strength = trial.suggest_float("ablation_strength", 0.3, 1.0)
        return list(ablation_plan(whitened_direction(vector, state.stats().residual[layer], ridge), strength=strength))
