"""Loading a checkpoint into torch: the one way every command does it.

Analysis (attribution, steering, evaluation, verification) runs in float32:
bf16 kernels round differently between engines and between batch shapes,
which would hide the effects being measured. BiasInject may train a frozen
bf16 model on a GPU (``dtype="auto"``). ``device_map`` hands placement to
accelerate for models beyond one device; without one, ``auto`` dtype also
moves the model to the GPU when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from editor.errors import EditorError

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_dtype(dtype: Dtype) -> str:
    """``auto``: bfloat16 on a GPU, float32 on a CPU."""
    import torch

    if dtype == "auto":
        return "bfloat16" if torch.cuda.is_available() else "float32"
    return dtype


def load_model(
    path: str | Path, *, dtype: Dtype = "float32", device_map: str | dict | None = None, max_memory: dict | None = None
) -> Any:
    """A causal LM from a checkpoint directory, in eval mode; the checkpoint is validated first (headers only)."""
    import torch
    import transformers

    auto = getattr(transformers, check_checkpoint(path))
    name = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {}
    if device_map:
        kwargs["device_map"] = device_map
    if max_memory:
        kwargs["max_memory"] = max_memory
    try:
        # use_safetensors: never fall back to a pickle file lying beside the weights (unpickling runs code)
        model: Any = auto.from_pretrained(Path(path), dtype=getattr(torch, name), use_safetensors=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise EditorError(f"{path}: transformers cannot load this checkpoint ({str(err).splitlines()[0]})") from None
    if dtype == "auto" and torch.cuda.is_available() and not device_map:
        model = model.to("cuda")
    return model.eval()


def check_checkpoint(path: str | Path) -> str:
    """The checks every command makes before loading: safetensors headers and index (``Checkpoint.open``), and
    for an architecture editor knows, the shapes config.json implies (a model it only evaluates may be another).
    Returns the transformers Auto class that loads it (a multimodal wrapper's is not AutoModelForCausalLM)."""
    from editor.core.architectures import ARCHITECTURES
    from editor.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(path)
    if ckpt.config.get("model_type") in ARCHITECTURES:
        return ckpt.info().arch.auto_class
    return "AutoModelForCausalLM"


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path))
