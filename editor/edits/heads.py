"""What the three head edits (zero, mean, scale) share: which W_O columns a head owns, and their checks."""

from __future__ import annotations

import numpy as np

from editor.core.model_info import ModelInfo
from editor.errors import EditorError


def head_slices(info: ModelInfo, heads: list[int]) -> list[slice]:
    """The W_O input columns of each query head (in the order given)."""
    d = info.head_dim
    return [slice(h * d, (h + 1) * d) for h in heads]


def check_heads(kind: str, layer: int, heads: list[int], info: ModelInfo) -> None:
    """The layer and every head exist, and no head is listed twice."""
    info.check_layer(layer)
    for head in heads:
        info.check_head(head)
    if len(set(heads)) != len(heads):
        raise EditorError(f"{kind} at layer {layer} lists a head twice: {heads}")


def zero_head_inputs(w: np.ndarray, slices: list[slice], orientation: str) -> np.ndarray:
    """W_O with the heads' input columns set to zero (assigned, not multiplied: no -0.0 or NaN left behind)."""
    for sl in slices:
        if orientation == "out_in":
            w[:, sl] = 0.0
        else:
            w[sl, :] = 0.0
    return w
