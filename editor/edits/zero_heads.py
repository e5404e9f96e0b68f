"""Remove attention heads by zeroing their input columns of W_O."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from editor.core.bake import INPUT_SIDE, BakeProgram
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit
from editor.edits.heads import check_heads, head_slices, zero_head_inputs


class ZeroHeads(Edit):
    """Zero the output of query heads ``heads`` in block ``layer``.

    Heads are query heads: with grouped-query attention several query heads
    share one KV head, but each still owns its own ``head_dim`` columns of W_O,
    so removing one query head leaves its KV-group siblings untouched.
    """

    kind: Literal["zero_heads"] = "zero_heads"
    layer: int
    heads: list[int] = Field(min_length=1)

    def validate_for(self, info: ModelInfo) -> None:
        check_heads("zero_heads", self.layer, self.heads, info)

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        writer = info.arch.attn
        slices = head_slices(info, sorted(self.heads))

        def zero(w: np.ndarray, first: int) -> np.ndarray:  # rows [first, first + len(w)) of W_O
            return zero_head_inputs(w, slices, writer.orientation, first)

        program.add_op(info.writer_weight(writer, self.layer), INPUT_SIDE, zero, self.describe(), rowwise=True)
        program.note_head_input(self.layer, self.heads, 0.0)  # cancels an earlier mean-ablation's constant

    def hook(self, model, info: ModelInfo):
        module = model.get_submodule(info.arch.attn.module.format(layer=self.layer))
        slices = head_slices(info, sorted(self.heads))

        def pre_hook(_module, args):
            x = args[0].clone()
            for sl in slices:
                x[..., sl] = 0
            return (x, *args[1:])

        return [module.register_forward_pre_hook(pre_hook)]

    def describe(self) -> str:
        heads = ", ".join(str(h) for h in sorted(self.heads))
        return f"layer {self.layer}: attention head{'s' if len(self.heads) > 1 else ''} {heads} zeroed"
