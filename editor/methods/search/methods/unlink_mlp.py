"""unlink_mlp: low-rank MLP updates fitted to the bias once per search (``fit.unlink``); a trial scales them all.
Not searched unless named: its fit takes minutes (about 7 on 2 cores for SmolLM2)."""

from __future__ import annotations

from typing import Any

from editor.edits import Edit
from editor.methods.fit.settings import UnlinkMlpSettings
from editor.methods.fit.unlink import UnlinkFit, fit_unlink
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.base import SearchMethod

UNLINK_SCALE = (0.5, 2.0)


class UnlinkMlpSearch(SearchMethod):
    name = "unlink_mlp"
    summary = "low-rank updates of late MLP (or attention) output projections fitted to the bias, scaled"
    settings_type = UnlinkMlpSettings
    searched_by_default = False

    def prepare(self, context: SearchContext) -> UnlinkFit:
        settings = self.settings
        assert isinstance(settings, UnlinkMlpSettings)
        inputs, seed = context.fit_inputs(), context.settings.seed
        objective = settings.objective_for(inputs, seed)
        return fit_unlink(
            inputs,
            settings.loop(seed, context.progress),
            layers=settings.layers,
            rank=settings.rank,
            objective=objective,
            sites=settings.sites,
        )

    def suggest(self, trial, state: UnlinkFit) -> list[Edit]:
        return list(state.edits(trial.suggest_float("unlink_scale", *UNLINK_SCALE)))

    def seeds(self, context: SearchContext) -> list[dict[str, Any]]:
        return [{"unlink_scale": 1.0}]  # the updates as fitted
