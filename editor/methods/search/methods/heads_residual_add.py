"""heads+residual_add: a head removal and a residual add in one trial (the heads section's settings for the
removal)."""

from __future__ import annotations

from typing import Any

from editor.edits import Edit
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.base import SearchMethod, strength_words, where_words
from editor.methods.search.methods.heads import HeadRanking, HeadsSettings, head_removal, rank_heads, removal_words
from editor.methods.search.methods.residual_add import residual_add_edits
from editor.methods.search.methods.vectors import capture_contrasts


class HeadsResidualAddSearch(SearchMethod):
    name = "heads+residual_add"
    summary = "a head removal and a residual add together"

    def prepare(self, context: SearchContext) -> tuple[HeadRanking, SearchContext, HeadsSettings]:
        heads: HeadsSettings = getattr(context.settings, "heads", HeadsSettings())
        return rank_heads(context, heads), capture_contrasts(context), heads

    def suggest(self, trial, state: tuple[HeadRanking, SearchContext, HeadsSettings]) -> list[Edit]:
        ranking, context, heads = state
        return head_removal(trial, ranking, heads) + residual_add_edits(trial, context)

    def describe(self, params: dict[str, Any]) -> list[str]:
        return removal_words(params) + where_words(params) + strength_words(params)
