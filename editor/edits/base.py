"""The common shape of an edit: a serializable record with two realizations.

``hook(model, info)`` changes activations of the untouched model at run time
(the reference, and the fast path for search loops); ``bake(program)``
registers the same change as tensor operations. Tests prove the two agree on
every supported architecture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.hooks import RemovableHandle

from editor.bake import BakeProgram
from editor.errors import EditorError
from editor.model_info import ModelInfo


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
        raise NotImplementedError

    def describe(self) -> str:
        """One line in plain words, for the model card and `wedit diff`."""
        raise NotImplementedError


def check_vector(values: Sequence[float], size: int, what: str, size_name: str = "hidden size") -> None:
    """Refuse a vector of the wrong length or with NaN/Inf, naming the edit field."""
    if len(values) != size:
        raise EditorError(
            f"{what} has {len(values)} entries but the model's {size_name} is {size}; build the vector for this model"
        )
    bad = next((i for i, x in enumerate(values) if not math.isfinite(x)), None)
    if bad is not None:
        raise EditorError(f"{what} has a non-finite value ({values[bad]}) at index {bad}; remove NaN/Inf before baking")


def unit(values: Sequence[float], what: str) -> torch.Tensor:
    vec = torch.tensor(values, dtype=torch.float64)
    norm = float(vec.norm())
    if norm == 0.0:
        raise EditorError(f"{what} is all zeros; a direction needs a non-zero vector")
    return (vec / norm).to(torch.float32)


def as_tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def writer_columns(weight: torch.Tensor, orientation: str, cols: slice) -> torch.Tensor:
    """A view of the input-side block ``cols`` of a writer weight, as [out, in]."""
    return weight[:, cols] if orientation == "out_in" else weight[cols, :].T


def first_output(output):
    """Decoder modules return a tensor or a tuple whose first entry is the hidden states."""
    return output[0] if isinstance(output, tuple) else output


def replace_first(output, new):
    return (new, *output[1:]) if isinstance(output, tuple) else new
