"""The fits a search makes once, before its trials, for the methods whose edits are trained: erase_identity's
directions and unlink_mlp's MLP updates (none for a method the search does not name)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from editor.core.model_info import ModelInfo
from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold
from editor.edits import AblateDirection
from editor.methods.search.erasure import ErasureFit, fit_erasure
from editor.methods.search.gap_fit import FitLoop
from editor.methods.search.identity import identity_covariances, identity_subspace
from editor.methods.search.settings import SearchSettings
from editor.methods.search.space import erase_start_layer
from editor.methods.search.unlink import UNLINK_LOOP, UnlinkFit, fit_unlink
from editor.methods.steer.capture import GenericStats

ERASE_START_RIDGE = 0.04  # the identity subspace the erasure fit starts from (the best ablate_identity trial's)


def fit_erasure_for_search(
    model,
    tokenizer,
    info: ModelInfo,
    settings: SearchSettings,
    layers: list[int],
    all_pairs: list[StereotypePair],
    build: SplitFold,
    generic: torch.Tensor,
    stats: GenericStats,
    identity: dict[int, np.ndarray],
    progress: bool,
) -> ErasureFit | None:
    """erase_identity's fit, started from the identity subspace of the searched layer nearest its depth
    (``identity``'s covariance there when ablate_identity already measured it)."""
    if "erase_identity" not in settings.methods:
        return None
    start = erase_start_layer(layers, info.num_layers)
    covariance = identity.get(start)
    if covariance is None:
        groups = sorted({p.identity for p in build.pairs})
        covariance = identity_covariances(model, info, tokenizer, groups, [start])[start]
    basis = identity_subspace(covariance, stats.residual[start], settings.erase_k, ERASE_START_RIDGE)
    # Refused here, not after minutes of fitting, where the architecture cannot take the projection.
    AblateDirection(direction=basis[0].tolist(), embedding=True).validate_for(info)
    return fit_erasure(
        model,
        info,
        tokenizer,
        all_pairs,
        build,
        basis,
        generic,
        FitLoop(
            steps=settings.erase_steps,
            kl_weight=settings.erase_kl_weight,
            prompts=settings.erase_prompts,
            seed=settings.seed,
            progress=progress,
        ),
    )


def fit_unlink_for_search(
    model,
    tokenizer,
    info: ModelInfo,
    settings: SearchSettings,
    all_pairs: list[StereotypePair],
    build: SplitFold,
    generic: torch.Tensor,
    progress: bool,
) -> UnlinkFit | None:
    """unlink_mlp's fit, at the search's rank, layers, steps, learning rate and KL weight."""
    if "unlink_mlp" not in settings.methods:
        return None
    return fit_unlink(
        model,
        info,
        tokenizer,
        all_pairs,
        build,
        generic,
        layers=settings.unlink_layers,
        rank=settings.unlink_rank,
        loop=replace(
            UNLINK_LOOP,
            steps=settings.unlink_steps,
            kl_weight=settings.erase_kl_weight,
            learning_rate=settings.unlink_learning_rate,
            seed=settings.seed,
            progress=progress,
        ),
    )
