"""Chat generation behind one interface: transformers in process, vLLM offline in a subprocess, or an endpoint.

Every backend takes the same chats and ``GenerationParams`` and returns one
string per chat, so the evaluation does not care which one ran. The
transformers and vLLM backends render prompts with the checkpoint's own chat
template into token ids here, so both engines see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from editor.engines.openai_client import DEFAULT_KEY_ENV, ChatClient, Message
from editor.engines.placement import input_device

Chat = list[Message]


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 200
    temperature: float = 0.5  # the paper's setting; 0 means greedy
    seed: int = 0


class Generator(Protocol):
    name: str

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]: ...


def chat_token_ids(tokenizer, chats: Sequence[Chat]) -> list[list[int]]:
    """Chat-template token ids, ready for the assistant's turn."""
    rows = []
    for chat in chats:
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        rows.append(list(ids))
    return rows


class TransformersGenerator:
    """Left-padded batched ``generate`` on an already loaded model (shared with the likelihood metrics)."""

    name = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 16, progress: bool = True):
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress

    @classmethod
    def from_dir(cls, path: Path, **kwargs) -> TransformersGenerator:
        from editor.engines.loading import load_model, load_tokenizer

        return cls(load_model(path), load_tokenizer(path), **kwargs)

    @torch.no_grad()
    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        rows = chat_token_ids(self.tokenizer, chats)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = input_device(self.model)
        torch.manual_seed(params.seed)
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: dict[int, str] = {}
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": 1.0, "top_k": 0}
            if params.temperature > 0
            else {"do_sample": False}
        )
        for start in tqdm(
            range(0, len(order), self.batch_size), desc="generate (transformers)", disable=not self.progress
        ):
            idx = order[start : start + self.batch_size]
            width = max(len(rows[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, i in enumerate(idx):
                ids[j, width - len(rows[i]) :] = torch.tensor(rows[i])
                mask[j, width - len(rows[i]) :] = 1
            gen = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=params.max_new_tokens,
                pad_token_id=pad,
                **sampling,
            )
            texts = self.tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
            out.update({i: t.strip() for i, t in zip(idx, texts)})
        return [out[i] for i in range(len(rows))]


class VllmGenerator:
    """Stock vLLM, offline, in its own process (it spawns workers and must own its ``__main__``)."""

    name = "vllm"

    def __init__(self, model_dir: Path, timeout: int = 3600, progress: bool = True, tensor_parallel_size: int = 1):
        self.model_dir, self.timeout, self.progress = Path(model_dir), timeout, progress
        self.tensor_parallel_size = tensor_parallel_size

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        from transformers import AutoTokenizer

        from editor.engines.vllm_worker import run_vllm

        rows = chat_token_ids(AutoTokenizer.from_pretrained(self.model_dir), chats)
        request = {
            "model": str(self.model_dir),
            "prompts": rows,
            "mode": "sample",
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
            "tensor_parallel_size": self.tensor_parallel_size,
        }
        results = run_vllm(request, what="--generator vllm", timeout=self.timeout, show_progress=self.progress)
        return [row["text"].strip() for row in results]


class OpenAIGenerator:
    """A model already served behind an OpenAI-compatible endpoint (e.g. `vllm serve EXPORT`)."""

    name = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        workers: int = 8,
        timeout: float = 600.0,
        progress: bool = True,
        api_key_env: str = DEFAULT_KEY_ENV,
    ):
        self.endpoint, self.model, self.workers, self.timeout, self.progress = (
            endpoint,
            model,
            workers,
            timeout,
            progress,
        )
        self.api_key_env = api_key_env

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        client = ChatClient(
            self.endpoint,
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            concurrency=self.workers,
            purpose="generation endpoint",
            hint="check --gen-endpoint and --gen-model",
        )
        with client:
            texts = client.chat_many(
                self.model,
                chats,
                seeds=[params.seed + i for i in range(len(chats))],
                desc=f"generate ({self.model})",
                progress=self.progress,
                temperature=params.temperature,
                max_tokens=params.max_new_tokens,
            )
        return [t.strip() for t in texts]
