"""Apply a plan's edits to a live model at run time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from editor.core.model_info import ModelInfo
from editor.edits.base import Edit


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


@contextmanager
def forward_hooks(model: torch.nn.Module, hooks: dict[str, Callable]) -> Iterator[torch.nn.Module]:
    """Forward hooks by module name (``module -> hook(module, args, output)``), removed on exit: what a fit
    enters around each edited forward pass, where its edit is not yet a fixed record."""
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()
