"""What every search method's ``prepare`` reads: the model, the build fold, ordinary text, and the inputs several
methods share (contrast activations, ordinary-text moments, identity covariances, head scores), each computed
once, on first use, from the build fold only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from editor.core.model_info import ModelInfo
from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold
from editor.methods.fit.loop import FitInputs
from editor.methods.steer.capture import Activations, GenericStats

if TYPE_CHECKING:
    from editor.methods.search.settings import SearchOptions


@dataclass
class SearchContext:
    model: torch.nn.Module
    tokenizer: Any
    info: ModelInfo
    settings: SearchOptions
    layers: list[int]  # the blocks a trial may use
    all_pairs: list[StereotypePair]
    build: SplitFold  # the only fold any input is made from
    generic: torch.Tensor  # WikiText-2 tokens for moments, head means and the fits' KL (no trial scores them)
    progress: bool = True
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def _once(self, key: Any, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def fit_inputs(self) -> FitInputs:
        return FitInputs(self.model, self.tokenizer, self.info, self.all_pairs, self.build, self.generic)

    def stats(self) -> GenericStats:
        """Ordinary-text moments: the stream after each searched block, every head's and neuron's input."""
        from editor.methods.steer.capture import generic_stats

        return self._once("stats", lambda: generic_stats(self.model, self.info, self.generic, self.layers))

    def activations(self, contrast: str) -> Activations:
        """Class means of one contrast's statements (``editor.methods.statements``), captured once."""
        from editor.methods.statements import statements_for
        from editor.methods.steer.capture import capture

        def make() -> Activations:
            texts, labels = statements_for(
                contrast,
                self.all_pairs,
                self.build,
                self.settings.statements,
                seed=self.settings.seed,
                model=self.model,
                tokenizer=self.tokenizer,
                data=self.settings.data,
            )
            return capture(self.model, self.info, self.tokenizer, texts, labels, progress=self.progress)

        return self._once(("acts", contrast), make)

    def vectors(self, contrast: str, site: str) -> np.ndarray:
        """[layers, hidden]: a contrast's class difference at ``site`` ("block", "attn" or "mlp")."""
        from editor.methods.steer.probes import mean_difference

        return self._once(("vectors", contrast, site), lambda: mean_difference(self.activations(contrast), site=site))

    def identity_covariances(self, layers: list[int]) -> dict[int, np.ndarray]:
        """Per block, the covariance over the build fold's groups of the stream where an attribute would follow."""
        from editor.methods.steer.identity import identity_covariances

        missing = [layer for layer in layers if ("identity", layer) not in self._cache]
        if missing:
            groups = sorted({p.identity for p in self.build.pairs})
            for layer, covariance in identity_covariances(
                self.model, self.info, self.tokenizer, groups, missing
            ).items():
                self._cache[("identity", layer)] = covariance
        return {layer: self._cache[("identity", layer)] for layer in layers}

    def head_scores(self, pairs: int) -> np.ndarray:
        """[layers, heads]: each head's contrastive direct effect on stereotyped attributes, over ``pairs`` pairs."""
        from editor.methods.attribute.ranking import association_head_scores

        return self._once(
            ("head_scores", pairs),
            lambda: association_head_scores(
                self.model, self.info, self.tokenizer, self.all_pairs, self.build, pairs, seed=self.settings.seed
            ),
        )

    def head_means(self) -> np.ndarray:
        """[layers, heads, head_dim]: every head's mean output over the ordinary text (for the mean removal)."""
        from editor.methods.attribute.removal import head_means

        return self._once("head_means", lambda: head_means(self.model, self.info, self.generic))
