"""BiasScope's settings: the recipe's ``attribute`` section and the flags of `wedit attribute`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from editor.core.settings import Settings
from editor.engines.openai_client import DEFAULT_KEY_ENV


class AttributeSettings(Settings):
    """Contrastive questions, per-head direct logit attribution over seeds, and the damage-aware k sweep."""

    target: str | None = Field(None, description="real country the stereotype is about (default: the preset's)")
    token: str | None = Field(
        None, description="an injected bias token to ask about instead of a country (the injection variant)"
    )
    eval_target: str | None = Field(
        None, description="real country for the k sweep's bias score (default: the preset's)"
    )
    pairs: str | None = Field(
        None, description="JSONL of contrastive pairs instead of the preset's questions (one bias)"
    )
    generator: Literal["templates", "openai"] = Field(
        "templates", description="where questions come from without pairs"
    )
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL for generator openai")
    gen_model: str | None = Field(None, description="model name at the endpoint")
    api_key_env: str = Field(
        DEFAULT_KEY_ENV, description="environment variable holding the endpoint's API key (never stored)"
    )
    questions: int | None = Field(
        None,
        ge=20,
        description="questions to use: a fixed draw of the preset's (null: all 110), or how many to generate (null: 100)",
    )
    eval_questions: int = Field(30, ge=5, description="questions held out from ranking, for the k sweep's bias score")
    seeds: int = Field(
        5, ge=1, description="country draws and question subsets; a head must rank in every seed's top k"
    )
    k_max: int = Field(50, ge=1, description="largest k in the sweep")
    batch_size: int = Field(16, ge=1, description="prompts per forward pass")
    removals: list[Literal["zero", "mean", "scale"]] = Field(
        ["zero", "mean", "scale"],
        min_length=1,
        description="head removals the k sweep tries (output zeroed, replaced by its WikiText-2 mean, or scaled); "
        "the best point inside the damage budget wins",
    )
    scales: list[float] = Field(
        [0.5], min_length=1, description="factors the scale removal multiplies the heads' outputs by, each in (0, 1)"
    )
    damage_budget: float = Field(
        0.05, gt=0, description="largest allowed relative WikiText-2 perplexity increase of the chosen k"
    )
    wiki_tokens: int = Field(
        4096,
        ge=64,
        description="WikiText-2 tokens the k sweep measures perplexity on (eval's default: the chosen point's "
        "damage is then the one the card reports)",
    )
    mean_tokens: int = Field(
        2048, ge=64, description="WikiText-2 tokens (from the end of the text) the heads' means are taken over"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AttributeSettings:
        if self.questions is not None and self.questions < self.eval_questions + 10:
            raise ValueError(
                f"questions must be at least eval_questions + 10 = {self.eval_questions + 10}: heads are ranked on the rest"
            )
        if self.generator == "openai" and not self.pairs and not (self.endpoint and self.gen_model):
            raise ValueError("generator openai needs endpoint and gen_model")
        if self.token and self.target:
            raise ValueError("give a target country or an injected token, not both")
        if any(not 0.0 < s < 1.0 for s in self.scales):
            raise ValueError(
                f"scales must lie strictly between 0 and 1 (0 is zero, 1 is no removal); got {self.scales}"
            )
        return self
