"""What one trial applies: Optuna's suggestions turned into a plan, from the inputs built once per search.

Every parameter has its own name (``add_alpha``, ``edit_alpha``, ...), so no name means two ranges; a plan is
rebuilt from a trial's recorded parameters with ``optuna.trial.FixedTrial``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from editor.core.model_info import ModelInfo
from editor.edits import AblateDirection, Edit, ResidualAdd
from editor.methods.attribute.removal import Removal
from editor.methods.search.erasure import ErasureFit
from editor.methods.search.heads import top_heads
from editor.methods.search.identity import identity_subspace
from editor.methods.search.selective import opposite_sign_layers
from editor.methods.search.settings import SearchSettings
from editor.methods.search.unlink import UnlinkFit
from editor.methods.steer.capture import Activations, GenericStats
from editor.methods.steer.directions import ablation_plan, whitened_direction
from editor.methods.steer.steer2edit import steer2edit_plan

# Strength ranges, measured on SmolLM2 with `wedit steer` (see its sweep): a residual add in units of the
# class difference, a Steer2Edit share of the difference to cancel, a whitening ridge.
ADD_ALPHA = (0.05, 2.0)
EDIT_ALPHA = (0.01, 0.4)
RIDGE = (0.003, 0.3)
# Where a vector measured at a site is added back: the stream after the block and the MLP's output both enter
# the stream at the MLP's output (its bias); the stream after attention at the attention's output.
ADD_SITE = {"block": "mlp", "mlp": "mlp", "attn": "attn"}
# Which writers ablate_identity edits. Attention outputs alone: on SmolLM2 (L23, k=3, nationality) the same
# held-out gap cut (-22%) at +1.6% perplexity and KL 0.020, against +2.3% and 0.041 for every writer at share 0.64.
# Each choice: the AblateDirection sites (None: every writer, and the embeddings too) and its words in tables.
IDENTITY_WRITERS: dict[str, tuple[list[Literal["attn", "mlp"]] | None, str]] = {
    "attn": (["attn"], "attention writes"),
    "all": (None, "all writes"),
}
# erase_identity's shares are fitted once per search; a trial scales them all (each capped at 1).
ERASE_SCALE = (0.4, 1.6)
# unlink_mlp's updates are fitted once per search; a trial scales them all.
UNLINK_SCALE = (0.5, 2.0)
# Depth of the layer whose identity subspace starts the erasure fit (layer 25 of SmolLM2's 30, where it was measured).
ERASE_DEPTH = 0.83


@dataclass
class SearchInputs:
    """Everything a trial reads, computed once: vectors per (contrast, site), class means, moments, head ranking."""

    layers: list[int]
    vectors: dict[tuple[str, str], np.ndarray]  # (contrast, "block" | "attn" | "mlp") -> [layers, hidden]
    acts: dict[str, Activations]  # contrast -> captured class means (Steer2Edit's keys)
    stats: GenericStats
    head_scores: np.ndarray  # [layers, heads]
    head_means: np.ndarray  # [layers, heads, head_dim]
    identity: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> covariance of group points
    erasure: ErasureFit | None = None  # erase_identity's fitted directions and shares
    unlink: UnlinkFit | None = None  # unlink_mlp's fitted MLP updates


def erase_start_layer(layers: list[int], num_layers: int) -> int:
    """The searched layer nearest ``ERASE_DEPTH``: its identity subspace is where the erasure fit starts."""
    return min(layers, key=lambda candidate: abs(candidate - ERASE_DEPTH * num_layers))


def starting_points(settings: SearchSettings, layers: list[int], num_layers: int) -> list[dict]:
    """Trials Optuna runs first, before its sampler proposes any: known-good settings, so a short search starts
    from them rather than from chance.

    From a manual sweep on SmolLM2 (nationality, chosen on the select fold): three group-identity directions at
    about 77% depth (layer 23 of 30), projected fully out of the attention outputs. Its layer is the searched
    layer nearest that depth, so the point carries to other depths of model. And the fitted erasure at its
    fitted shares.
    """
    points = []
    if "ablate_identity" in settings.methods and layers:
        layer = min(layers, key=lambda candidate: abs(candidate - 0.77 * num_layers))
        points.append(
            {
                "method": "ablate_identity",
                "layer": layer,
                "identity_k": min(3, settings.identity_k_max),
                "ridge": 0.27,
                "ablation_strength": 1.0,
                "identity_writers": "attn",
            }
        )
    if "erase_identity" in settings.methods:
        points.append({"method": "erase_identity", "erase_scale": 1.0})  # the shares as fitted
    if "unlink_mlp" in settings.methods:
        points.append({"method": "unlink_mlp", "unlink_scale": 1.0})  # the updates as fitted
    return points


def trial_edits(trial, inputs: SearchInputs, settings: SearchSettings, info: ModelInfo) -> list[Edit]:
    """The plan of one trial (``trial``: an optuna Trial or FixedTrial)."""
    method = trial.suggest_categorical("method", list(settings.methods))
    edits: list[Edit] = []
    if method.startswith("heads"):
        k = trial.suggest_int("k", 1, settings.k_max)
        kind = trial.suggest_categorical("removal", list(settings.removals))
        strength = trial.suggest_float("head_scale", 0.0, 0.9) if kind == "scale" else 0.0
        edits += Removal(kind, strength).edits(top_heads(inputs.head_scores, k), inputs.head_means)
    if method in ("residual_add", "heads+residual_add"):
        layer = trial.suggest_categorical("layer", inputs.layers)
        site = trial.suggest_categorical("site", list(settings.sites))
        contrast = trial.suggest_categorical("contrast", list(settings.contrasts))
        alpha = trial.suggest_float("add_alpha", *ADD_ALPHA, log=True)
        vector = inputs.vectors[(contrast, site)][layer]
        edits.append(ResidualAdd(layer=layer, site=ADD_SITE[site], vector=vector.tolist(), scale=-alpha))
    elif method == "ablate_direction":
        layer = trial.suggest_categorical("layer", inputs.layers)
        contrast = trial.suggest_categorical("contrast", list(settings.contrasts))
        ridge = trial.suggest_float("ridge", *RIDGE, log=True)
        strength = trial.suggest_float("ablation_strength", 0.3, 1.0)
        direction = whitened_direction(inputs.vectors[(contrast, "block")][layer], inputs.stats.residual[layer], ridge)
        edits += ablation_plan(direction, strength=strength)
    elif method == "selective_add":
        edits += _selective_adds(trial, inputs, settings)
    elif method == "ablate_identity":
        edits += _identity_ablation(trial, inputs, settings)
    elif method == "erase_identity":
        assert inputs.erasure is not None, "build_inputs fits the erasure when the method is searched"
        edits += inputs.erasure.edits(trial.suggest_float("erase_scale", *ERASE_SCALE))
    elif method == "unlink_mlp":
        assert inputs.unlink is not None, "build_inputs fits the MLP updates when the method is searched"
        edits += inputs.unlink.edits(trial.suggest_float("unlink_scale", *UNLINK_SCALE))
    elif method == "steer2edit":
        layer = trial.suggest_categorical("layer", inputs.layers)
        contrast = trial.suggest_categorical("contrast", list(settings.contrasts))
        alpha = trial.suggest_float("edit_alpha", *EDIT_ALPHA, log=True)
        vector = inputs.vectors[(contrast, "block")][layer]
        edits += steer2edit_plan(inputs.acts[contrast], info, inputs.stats, vector, layer, alpha)
    return edits


def _selective_adds(trial, inputs: SearchInputs, settings: SearchSettings) -> list[Edit]:
    """One residual add at every searchable layer where the classes project with opposite signs (none: no edit)."""
    site = trial.suggest_categorical("site", list(settings.sites))
    contrast = trial.suggest_categorical("contrast", list(settings.contrasts))
    alpha = trial.suggest_float("add_alpha", *ADD_ALPHA, log=True)
    chosen = opposite_sign_layers(inputs.acts[contrast], site, inputs.layers)
    trial.set_user_attr("selected_layers", chosen)
    vectors = inputs.vectors[(contrast, site)]
    return [
        ResidualAdd(layer=layer, site=ADD_SITE[site], vector=vectors[layer].tolist(), scale=-alpha / len(chosen))
        for layer in chosen
    ]


def _identity_ablation(trial, inputs: SearchInputs, settings: SearchSettings) -> list[Edit]:
    """k directions that tell groups apart, projected out of the attention outputs, or of every residual write
    and the embeddings."""
    layer = trial.suggest_categorical("layer", inputs.layers)
    k = trial.suggest_int("identity_k", 1, settings.identity_k_max)
    ridge = trial.suggest_float("ridge", *RIDGE, log=True)
    strength = trial.suggest_float("ablation_strength", 0.3, 1.0)
    writers = trial.suggest_categorical("identity_writers", list(IDENTITY_WRITERS))
    basis = identity_subspace(inputs.identity[layer], inputs.stats.residual[layer], k, ridge)
    sites, _ = IDENTITY_WRITERS[writers]
    return [
        AblateDirection(direction=row.tolist(), strength=strength, sites=sites, embedding=sites is None)
        for row in basis
    ]


def describe(params: dict) -> str:
    """A trial's parameters in words, for tables and the plot."""
    method = params["method"]
    parts = [method]
    if method.startswith("heads"):
        removal = params["removal"]
        how = (
            f"scaled {params['head_scale']:.2f}" if removal == "scale" else {"zero": "zeroed", "mean": "mean"}[removal]
        )
        parts.append(f"k={params['k']} {how}")
    if "layer" in params:
        parts.append(f"L{params['layer']}")
    if "site" in params:
        parts.append(params["site"])
    if "contrast" in params:
        parts.append(params["contrast"])
    if "identity_k" in params:
        parts.append(f"k={params['identity_k']}")
    if "identity_writers" in params:
        parts.append(IDENTITY_WRITERS[params["identity_writers"]][1])
    for key, label in (
        ("add_alpha", "a"),
        ("edit_alpha", "a"),
        ("ridge", "ridge"),
        ("ablation_strength", "s"),
        ("erase_scale", "x"),
        ("unlink_scale", "x"),
    ):
        if key in params:
            parts.append(f"{label}={params[key]:.3g}")
    return " ".join(parts)
