"""selective_add: steer only the layers where the two classes sit on opposite sides of the vector.

At a layer where the biased class's mean projects positively onto the class difference and the neutral
class's mean negatively, the vector separates the two classes about the origin, so subtracting it moves
biased text towards neutral without pushing neutral text further than it already is; where both means
project with one sign, the vector mostly carries what the two classes share and steering there is damage.
A trial applies one residual add at each such layer, the strength shared among them.
"""

from __future__ import annotations

from editor.edits import Edit, ResidualAdd
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.vectors import ADD_SITE, VectorMethod, suggest_add
from editor.methods.steer.capture import Activations
from editor.methods.steer.probes import site_stream


def opposite_sign_layers(acts: Activations, site: str, layers: list[int]) -> list[int]:
    """The layers of ``layers`` where mean(biased) · v > 0 > mean(neutral) · v, v the difference of the means."""
    stream = site_stream(acts, site)
    biased = stream[acts.labels == 1].mean(0)
    neutral = stream[acts.labels == 0].mean(0)
    chosen = []
    for layer in layers:
        v = biased[layer] - neutral[layer]
        if float(biased[layer] @ v) > 0 > float(neutral[layer] @ v):
            chosen.append(layer)
    return chosen


class SelectiveAddSearch(VectorMethod):
    name = "selective_add"
    summary = "residual adds at every searched block where the two classes project with opposite signs"

    def suggest(self, trial, state: SearchContext) -> list[Edit]:
        """One residual add at every searchable layer where the classes project with opposite signs (none: no
        edit)."""
        site, contrast, alpha = suggest_add(trial, state)
        chosen = opposite_sign_layers(state.activations(contrast), site, state.layers)
        trial.set_user_attr("selected_layers", chosen)
        vectors = state.vectors(contrast, site)
        return [
            ResidualAdd(layer=layer, site=ADD_SITE[site], vector=vectors[layer].tolist(), scale=-alpha / len(chosen))
            for layer in chosen
        ]
