"""The common shape of an edit: a serializable record with two realizations.

``hook(model, info)`` changes activations of the untouched model at run time
(the reference, and the fast path for search loops); ``bake(program)``
registers the same change as tensor operations. Tests prove the two agree on
every supported architecture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from editor.core.bake import BakeProgram
from editor.core.model_info import ModelInfo
from editor.errors import EditorError

if TYPE_CHECKING:  # torch is needed for hooks only; baking and exporting never import it
    import torch
    from torch.utils.hooks import RemovableHandle


class Edit(BaseModel):
    """Base class. Subclasses set ``kind`` to a Literal used as the JSON discriminator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str

    def validate_for(self, info: ModelInfo) -> None:
        """Raise EditorError (bad input) or RefusedEdit (architecture cannot hold it exactly)."""

    def prepare(self, program: BakeProgram) -> None:
        """Declare new tensors (biases) before any edit registers operations."""

    def bake(self, program: BakeProgram) -> None:
        raise NotImplementedError

    def hook(self, model: torch.nn.Module, info: ModelInfo) -> list[RemovableHandle]:
        """Register forward hooks that apply this edit to ``model``; the caller removes them."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line in plain words, for the model card and `wedit diff`."""
        raise NotImplementedError

    def first_layer(self) -> int:
        """The lowest decoder layer this edit changes; layers below it compute what the unedited model computes
        (a sweep replays them, see ``core.prefix_cache``). An edit of one layer names it in ``layer``; any
        other (the embeddings, every writer, a new token) is taken to start at layer 0."""
        layer = getattr(self, "layer", None)
        return layer if isinstance(layer, int) else 0


def check_vector(values: Sequence[float], size: int, what: str, size_name: str = "hidden size") -> None:
    """Refuse a vector of the wrong length or with NaN/Inf, naming the edit field."""
    if len(values) != size:
        raise EditorError(
            f"{what} has {len(values)} entries but the model's {size_name} is {size}; build the vector for this model"
        )
    bad = next((i for i, x in enumerate(values) if not math.isfinite(x)), None)
    if bad is not None:
        raise EditorError(f"{what} has a non-finite value ({values[bad]}) at index {bad}; remove NaN/Inf before baking")


def unit(values: Sequence[float], what: str) -> np.ndarray:
    """``values`` scaled to unit length (normalised in float64, returned as float32)."""
    vec = np.asarray(values, dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise EditorError(f"{what} is all zeros; a direction needs a non-zero vector")
    return (vec / norm).astype(np.float32)


def as_array(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)
