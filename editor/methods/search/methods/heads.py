"""heads: BiasScope's removal for the search: the top-k heads by their contrastive direct effect on stereotyped
attributes over the build fold (``attribute.ranking``), zeroed, mean-ablated or scaled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from editor.core.settings import Settings
from editor.edits import Edit
from editor.methods.attribute.ranking import top_heads
from editor.methods.attribute.removal import Removal
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.base import SearchMethod


class HeadsSettings(Settings):
    k_max: int = Field(12, ge=1, description="most heads a head removal takes out")
    removals: list[Literal["zero", "mean", "scale"]] = Field(
        ["zero", "mean", "scale"], min_length=1, description="how removed heads are taken out"
    )
    pairs: int = Field(96, ge=8, description="build-fold pairs the head scores are averaged over")


@dataclass(frozen=True)
class HeadRanking:
    scores: np.ndarray  # [layers, heads]
    means: np.ndarray  # [layers, heads, head_dim]


def rank_heads(context: SearchContext, settings: HeadsSettings) -> HeadRanking:
    return HeadRanking(context.head_scores(settings.pairs), context.head_means())


def head_removal(trial, ranking: HeadRanking, settings: HeadsSettings) -> list[Edit]:
    """The top k heads, taken out as the trial chooses (shared with heads+residual_add)."""
    k = trial.suggest_int("k", 1, settings.k_max)
    kind = trial.suggest_categorical("removal", list(settings.removals))
    strength = trial.suggest_float("head_scale", 0.0, 0.9) if kind == "scale" else 0.0
    return Removal(kind, strength).edits(top_heads(ranking.scores, k), ranking.means)


def removal_words(params: dict[str, Any]) -> list[str]:
    """ "k=3 zeroed": how many heads and how they are taken out."""
    removal = params["removal"]
    how = f"scaled {params['head_scale']:.2f}" if removal == "scale" else {"zero": "zeroed", "mean": "mean"}[removal]
    return [f"k={params['k']} {how}"]


class HeadsSearch(SearchMethod):
    name = "heads"
    summary = "the top-k heads by contrastive direct logit attribution, zeroed, mean-ablated or scaled"
    settings_type = HeadsSettings

    def prepare(self, context: SearchContext) -> HeadRanking:
        assert isinstance(self.settings, HeadsSettings)
        return rank_heads(context, self.settings)

    def suggest(self, trial, state: HeadRanking) -> list[Edit]:
        assert isinstance(self.settings, HeadsSettings)
        return head_removal(trial, state, self.settings)

    def describe(self, params: dict[str, Any]) -> list[str]:
        return removal_words(params)
