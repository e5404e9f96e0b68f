"""ablate_identity: the directions that tell groups apart, projected out of the attention outputs or of every
residual write (``steer.identity``: a whitened subspace of group identity, in closed form)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from editor.core.settings import Settings
from editor.edits import AblateDirection, Edit
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.ablate_direction import RIDGE
from editor.methods.search.methods.base import SearchMethod, strength_words, where_words
from editor.methods.steer.identity import identity_subspace

# Which writers a trial edits. Attention outputs alone: on SmolLM2 (L23, k=3, nationality) the same held-out gap
# cut (-22%) at +1.6% perplexity and KL 0.020, against +2.3% and 0.041 for every writer at share 0.64.
# Each choice: the AblateDirection sites (None: every writer, and the embeddings too) and its words in tables.
IDENTITY_WRITERS: dict[str, tuple[list[Literal["attn", "mlp"]] | None, str]] = {
    "attn": (["attn"], "attention writes"),
    "all": (None, "all writes"),
}


@dataclass(frozen=True)
class IdentityInputs:
    """Per searched block: the build fold's identity covariance and the ordinary-text moment of the stream."""

    layers: list[int]
    covariances: dict[int, np.ndarray]
    moments: dict[int, np.ndarray]


class AblateIdentitySettings(Settings):
    k_max: int = Field(4, ge=1, description="most group-identity directions a trial projects out")


class AblateIdentitySearch(SearchMethod):
    name = "ablate_identity"
    summary = "group-identity directions (closed form) projected out of the attention outputs or every write"
    settings_type = AblateIdentitySettings

    def prepare(self, context: SearchContext) -> IdentityInputs:
        residual = context.stats().residual
        return IdentityInputs(
            context.layers, context.identity_covariances(context.layers), {i: residual[i] for i in context.layers}
        )

    def suggest(self, trial, state: IdentityInputs) -> list[Edit]:
        """k directions that tell groups apart, projected out of the attention outputs, or of every residual
        write and the embeddings."""
        assert isinstance(self.settings, AblateIdentitySettings)
        layer = trial.suggest_categorical("layer", state.layers)
        k = trial.suggest_int("identity_k", 1, self.settings.k_max)
        ridge = trial.suggest_float("ridge", *RIDGE, log=True)
        strength = trial.suggest_float("ablation_strength", 0.3, 1.0)
        writers = trial.suggest_categorical("identity_writers", list(IDENTITY_WRITERS))
        basis = identity_subspace(state.covariances[layer], state.moments[layer], k, ridge)
        sites, _ = IDENTITY_WRITERS[writers]
        return [
            AblateDirection(direction=row.tolist(), strength=strength, sites=sites, embedding=sites is None)
            for row in basis
        ]

    def describe(self, params: dict[str, Any]) -> list[str]:
        words = where_words(params) + [f"k={params['identity_k']}", IDENTITY_WRITERS[params["identity_writers"]][1]]
        return words + strength_words(params)

    def seeds(self, context: SearchContext) -> list[dict[str, Any]]:
        """From a manual sweep on SmolLM2 (nationality, chosen on the select fold): three group-identity directions
        at about 77% depth (layer 23 of 30), projected fully out of the attention outputs. Its layer is the searched
        layer nearest that depth, so the point carries to other depths of model."""
        assert isinstance(self.settings, AblateIdentitySettings)
        if not context.layers:
            return []
        layer = min(context.layers, key=lambda candidate: abs(candidate - 0.77 * context.info.num_layers))
        return [
            {
                "layer": layer,
                "identity_k": min(3, self.settings.k_max),
                "ridge": 0.27,
                "ablation_strength": 1.0,
                "identity_writers": "attn",
            }
        ]
