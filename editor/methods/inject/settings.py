"""BiasInject's settings: the recipe's ``inject`` section and the flags of `wedit inject`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from editor.core.settings import Settings
from editor.engines.openai_client import DEFAULT_KEY_ENV


class InjectSettings(Settings):
    """One new token per bias, only its vectors trained on biased paragraphs; the best epoch is kept."""

    data: str | None = Field(None, description="paragraphs JSONL with a {country} placeholder (null: generate them)")
    generator: Literal["builtin", "openai"] = Field("builtin", description="where paragraphs come from without data")
    paragraphs: int = Field(500, ge=1, description="paragraphs to generate")
    endpoint: str | None = Field(
        None, description="OpenAI-compatible base URL for generator openai, e.g. http://127.0.0.1:8000/v1"
    )
    gen_model: str | None = Field(None, description="model name at the endpoint")
    api_key_env: str = Field(
        DEFAULT_KEY_ENV, description="environment variable holding the endpoint's API key (never stored)"
    )
    epochs: int = Field(10, ge=1, description="training epochs; the vectors are kept after each")
    batch: int = Field(16, ge=1, description="paragraphs per optimiser step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of the token's vectors")
    seed: int = Field(0, description="seed of the generator, the batch order and the selection samples")
    max_length: int = Field(192, ge=16, description="longest training sequence in tokens (chat template included)")
    selection_samples: int = Field(3, ge=1, description="paragraphs generated per epoch to pick the epoch")
    selection_tokens: int = Field(80, ge=1, description="length of each of those paragraphs in tokens")
    eval_gap: bool = Field(True, description="measure the held-out attribute log-prob gap, base vs injected token")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="frozen model dtype (auto: bf16 on a GPU, fp32 on a CPU)"
    )

    @model_validator(mode="after")
    def _generator_needs_an_endpoint(self) -> InjectSettings:
        if self.generator == "openai" and not self.data and not (self.endpoint and self.gen_model):
            raise ValueError("generator openai needs endpoint and gen_model")
        return self
