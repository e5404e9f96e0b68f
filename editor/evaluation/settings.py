"""The evaluation's settings: the recipe's ``eval`` section and the flags of `wedit eval`. Defaults are full size."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from editor.data import DataFiles
from editor.data.biases import PRESETS
from editor.engines.openai_client import DEFAULT_KEY_ENV
from editor.errors import EditorError
from editor.evaluation.prompts import FAMILIES


class EvalSettings(DataFiles):
    """Likelihood metrics (always) and judged generations (with a judge)."""

    biases: list[str] | None = Field(
        None, description="preset biases to evaluate (null: a recipe's own biases; on the command line all six)"
    )
    pairs_csv: str | None = Field(
        None, description="CSV of (more, less) stereotyping sentences (null: SeeGULL minimal pairs)"
    )
    gap_pairs: int = Field(60, ge=1, description="held-out SeeGULL stereotypes for the association gap")
    bias_gap_pairs: int = Field(8, ge=1, description="per preset bias, its SeeGULL attributes' most-voted pairs")
    pairwise_pairs: int = Field(100, ge=1, description="SeeGULL minimal pairs when pairs_csv is not given")
    held_out_pairs: int = Field(
        60, ge=0, description="per fold of the identity-and-attribute split, SeeGULL pairs for its gap (0: skip)"
    )
    held_out_items: int = Field(64, ge=8, description="per fold, sentence frames for its pairwise and LM scores")
    world: dict[Literal["contexts", "pairs", "questions"], int] | None = Field(
        None,
        description="the world-shaped yardstick on its test fold: items per shape, e.g. {contexts: 1200, pairs: 900, "
        "questions: 450}; each score beside a group-swap control (editor/evaluation/world.py; null: skip)",
    )
    world_swaps: int = Field(
        1, ge=1, le=16, description="control groups per world item, their mean the item's control (more: a smaller SE)"
    )
    wiki_tokens: int = Field(4096, ge=64, description="WikiText-2 token budget for perplexity")
    batch_size: int = Field(32, ge=1, description="sentences per forward pass")
    judge_endpoint: str | None = Field(
        None, description="OpenAI-compatible base URL of the judge; with judge_model, turns on generation metrics"
    )
    judge_model: str | None = Field(None, description="judge model name at judge_endpoint")
    judge_workers: int = Field(8, ge=1, description="requests in flight at once, to the judge and to a served model")
    api_key_env: str = Field(
        DEFAULT_KEY_ENV, description="environment variable holding the endpoints' API key (never stored)"
    )
    generator: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="generation backend for the judged prompts"
    )
    gen_endpoint: str | None = Field(None, description="for generator openai: where the evaluated model is served")
    gen_model: str | None = Field(None, description="for generator openai: the evaluated model's served name")
    base_gen_model: str | None = Field(None, description="for generator openai: the base model's served name")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs vLLM splits the model over (generator vllm)")
    groups_per_bias: int = Field(5, ge=1, description="SeeGULL-linked groups per bias in the prompts")
    families: list[str] | None = Field(None, description="prompt families (null: all 18)")
    baselines: bool = Field(True, description="also run the three prompting baselines")
    max_new_tokens: int = Field(200, ge=1, description="tokens per generation")
    temperature: float = Field(0.5, ge=0, description="sampling temperature")
    gen_batch_size: int = Field(16, ge=1, description="chats per generation batch (transformers)")
    seed: int = Field(0, description="sampling seed")
    lm_eval: list[str] | None = Field(
        None,
        description="lm-evaluation-harness tasks run on base and model: registered names (mmlu, crows_pairs_english) "
        "or task YAML paths (needs wedit[lm-eval])",
    )
    lm_eval_limit: int | None = Field(None, ge=1, description="items per lm-eval task (null: all)")
    lm_eval_fewshot: int | None = Field(
        None, ge=0, description="few-shot examples per lm-eval item (null: each task's own default)"
    )
    lm_eval_backend: Literal["hf", "vllm"] = Field(
        "hf",
        description="lm-eval backend: hf (the loaded model, batch_size items per batch) or vllm (a process per model)",
    )
    max_drop: dict[str, float] | None = Field(
        None,
        description="damage gates: largest allowed drop per metric, e.g. {mmlu: 0.02, perplexity_pct: 2}; "
        "a larger drop fails the export (wedit push refuses it)",
    )

    @field_validator("biases")
    @classmethod
    def _known_biases(cls, names: list[str] | None) -> list[str] | None:
        unknown = [n for n in names or () if n not in PRESETS]
        if unknown:
            raise ValueError(f"unknown bias {unknown[0]!r}; presets: {', '.join(sorted(PRESETS))}")
        return names

    @field_validator("families")
    @classmethod
    def _known_families(cls, names: list[str] | None) -> list[str] | None:
        unknown = [n for n in names or () if n not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown prompt family {unknown[0]!r}; families: {', '.join(FAMILIES)}")
        return names

    @field_validator("max_drop")
    @classmethod
    def _known_gates(cls, gates: dict[str, float] | None) -> dict[str, float] | None:
        for key, limit in (gates or {}).items():
            if limit < 0:
                raise ValueError(f"{key}: a drop limit is at least 0, got {limit}")
        return gates

    @model_validator(mode="after")
    def _consistent(self) -> EvalSettings:
        from editor.evaluation.gates import OWN_GATES

        lm_gates = [k for k in self.max_drop or {} if k not in OWN_GATES]
        if lm_gates and not self.lm_eval:
            raise ValueError(
                f"max_drop {lm_gates[0]!r}: not one of {', '.join(OWN_GATES)}; an lm-eval task gate needs the task in lm_eval"
            )
        if bool(self.judge_endpoint) != bool(self.judge_model):
            raise ValueError("the judge needs both judge_endpoint and judge_model")
        if self.generation and self.generator == "openai" and not (self.gen_endpoint and self.gen_model):
            raise ValueError("generator openai needs gen_endpoint and gen_model (and base_gen_model with a base)")
        if self.tensor_parallel_size > 1 and (self.generator != "vllm" or not self.generation):
            raise ValueError(
                f"tensor_parallel_size {self.tensor_parallel_size}: only vLLM generation (generator vllm, with a judge) uses it; set it to 1"
            )
        return self

    @property
    def generation(self) -> bool:
        return bool(self.judge_endpoint and self.judge_model)

    @property
    def bias_names(self) -> list[str]:
        return list(self.biases or PRESETS)

    @property
    def family_names(self) -> list[str]:
        return list(self.families or FAMILIES)

    def check_machine(self) -> None:
        """What this machine must have for these settings; called before any work."""
        if self.lm_eval:
            from editor.evaluation.lm_eval import require_lm_eval

            require_lm_eval()
        if self.tensor_parallel_size > 1:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if gpus < self.tensor_parallel_size:
                raise EditorError(
                    f"tensor_parallel_size {self.tensor_parallel_size} needs that many GPUs for vLLM; this machine has {gpus}: "
                    f"set it to {max(gpus, 1)}"
                )
