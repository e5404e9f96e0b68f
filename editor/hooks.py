"""Apply a plan's edits to a live model at run time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from editor.edits.base import Edit
from editor.model_info import ModelInfo


@contextmanager
def hooked(model: torch.nn.Module, edits: Iterable[Edit], info: ModelInfo) -> Iterator[torch.nn.Module]:
    """Register every edit's hooks in plan order; remove them all on exit, even after an error."""
    edits = list(edits)
    for edit in edits:
        edit.validate_for(info)
    handles = []
    try:
        for edit in edits:
            handles += edit.hook(model, info)
        yield model
    finally:
        for handle in handles:
            handle.remove()


def model_info_from_model(model: torch.nn.Module) -> ModelInfo:
    """ModelInfo for a loaded transformers model, with names as save_pretrained would write them."""
    from editor.model_info import TensorMeta

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    config = model.config.to_dict()
    tensors = {n: TensorMeta(tuple(p.shape), names.get(p.dtype, "F32")) for n, p in model.state_dict().items()}
    return ModelInfo(config, tensors, where=f"{type(model).__name__} config")
