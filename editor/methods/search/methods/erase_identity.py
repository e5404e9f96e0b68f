"""erase_identity: group-identity directions fitted to the bias once per search (``fit.erasure``); a trial
scales all their shares together."""

from __future__ import annotations

from typing import Any

from editor.edits import Edit
from editor.methods.fit.erasure import ErasureFit, erase_start_layer, fit_erasure, start_basis
from editor.methods.fit.settings import EraseIdentitySettings
from editor.methods.search.context import SearchContext
from editor.methods.search.methods.base import SearchMethod

ERASE_SCALE = (0.4, 1.6)  # each share is capped at 1


class EraseIdentitySearch(SearchMethod):
    name = "erase_identity"
    summary = "group-identity directions fitted to the squared association gap (a fit once per search), scaled"
    settings_type = EraseIdentitySettings

    def prepare(self, context: SearchContext) -> ErasureFit:
        """The fit, started from the identity subspace of the searched block nearest its depth (unless the
        settings name one)."""
        settings = self.settings
        assert isinstance(settings, EraseIdentitySettings)
        info = context.info
        start = settings.start_layer
        if start is None:
            start = erase_start_layer(context.layers, info.num_layers)
        info.check_layer(start, "erase_identity.start_layer")
        basis = start_basis(
            context.fit_inputs(),
            start,
            settings.k,
            covariance=context.identity_covariances([start])[start],
            moment=context.stats().residual[start] if start in context.layers else None,
        )
        inputs, seed = context.fit_inputs(), context.settings.seed
        return fit_erasure(inputs, basis, settings.loop(seed, context.progress), settings.objective_for(inputs, seed))

    def suggest(self, trial, state: ErasureFit) -> list[Edit]:
        return list(state.edits(trial.suggest_float("erase_scale", *ERASE_SCALE)))

    def seeds(self, context: SearchContext) -> list[dict[str, Any]]:
        return [{"erase_scale": 1.0}]  # the shares as fitted
