"""Steering's settings: the recipe's ``steer`` section and the flags of `wedit steer`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from editor.data import DataFiles

METHODS = ("residual_add", "ablate_direction", "steer2edit")
KEY_SOURCES = ("contrast", "biased_mean")


class SteerSettings(DataFiles):
    """Vectors from labelled statements, a hooked sweep of layer and strength, and one plan per bake."""

    method: Literal["residual_add", "ablate_direction", "steer2edit"] = Field(
        "steer2edit", description="which of the three plans is the run's plan.json (and goes into a recipe's export)"
    )
    contrast: Literal["identity", "negation"] = Field(
        "identity", description="SeeGULL statements: stereotyped vs unlinked group, or asserted vs hedged"
    )
    residual_contrasts: list[Literal["identity", "negation"]] = Field(
        ["identity", "negation"],
        min_length=1,
        description="statement sets whose vectors the residual add is swept with (ignored with data)",
    )
    keys: list[Literal["contrast", "biased_mean"]] = Field(
        ["contrast", "biased_mean"], min_length=1, description="Steer2Edit input keys to sweep"
    )
    ablation_ridges: list[float] = Field(
        [0.01, 0.03, 0.1], min_length=1, description="ridges of the whitened ablation direction"
    )
    ablation_strengths: list[float] = Field(
        [0.6, 1.0], min_length=1, description="shares of the direction's component to remove"
    )
    layers: list[int] | None = Field(None, description="blocks to try (null: at 50% and 70% depth)")
    alphas: list[float] = Field(
        [0.1, 0.25, 0.5, 0.75], min_length=1, description="residual_add strengths, in units of the vector"
    )
    edit_alphas: list[float] = Field(
        [0.025, 0.05, 0.1, 0.2],
        min_length=1,
        description="Steer2Edit strengths: the share of the class difference to cancel",
    )
    damage_budget: float = Field(0.05, gt=0, description="largest allowed relative WikiText-2 perplexity increase")
    statements: int = Field(200, ge=10, description="stereotype pairs turned into statements (two each)")
    eval_pairs: int = Field(60, ge=5, description="held-out SeeGULL pairs for the association gap")
    wiki_tokens: int = Field(2048, ge=64, description="WikiText-2 tokens perplexity is measured on")
    generic_tokens: int = Field(
        4096, ge=64, description="further WikiText-2 tokens for damage-aware directions and keys"
    )
    data: str | None = Field(
        None, description="labelled JSONL/CSV (text, label 1=biased/0=neutral) instead of the SeeGULL statements"
    )
