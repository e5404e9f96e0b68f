"""What the three head edits (zero, mean, scale) share: which W_O columns a head owns, and their checks."""

from __future__ import annotations

import numpy as np

from editor.core.bake import block_rows
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


def head_input_views(w: np.ndarray, slices: list[slice], orientation: str, first: int = 0) -> list[np.ndarray]:
    """Views of each head's W_O input in ``w``, rows ``[first, first + len(w))`` of W_O: its columns when W_O is
    stored (out, in), its rows inside the block when stored (in, out). Empty for a head outside the block."""
    if orientation == "out_in":
        return [w[:, sl] for sl in slices]
    views = []
    for sl in slices:
        if meet := block_rows(sl.start, sl.stop, first, len(w)):
            views.append(w[meet[0], :])
    return views


def zero_head_inputs(w: np.ndarray, slices: list[slice], orientation: str, first: int = 0) -> np.ndarray:
    """W_O with the heads' input columns set to zero (assigned, not multiplied: no -0.0 or NaN left behind)."""
    for view in head_input_views(w, slices, orientation, first):
        view[...] = 0.0
    return w
