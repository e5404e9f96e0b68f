"""Turn attention heads down: multiply their outputs by a factor in [0, 1]."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from editor.core.bake import INPUT_SIDE, BakeProgram
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit
from editor.edits.heads import check_heads, head_input_views, head_slices


class ScaleHeads(Edit):
    """Multiply the output of query heads ``heads`` in block ``layer`` by ``scale`` (0: removed, 1: unchanged).

    A softer removal than zeroing: the head still writes its usual direction, only weaker. The bake scales the
    heads' input columns of W_O, which is exact on every architecture (the same columns zero_heads zeroes).
    """

    kind: Literal["scale_heads"] = "scale_heads"
    layer: int
    heads: list[int] = Field(min_length=1)
    scale: float = Field(ge=0.0, le=1.0)

    def validate_for(self, info: ModelInfo) -> None:
        check_heads("scale_heads", self.layer, self.heads, info)

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        writer = info.arch.attn
        slices = head_slices(info, self.heads)
        factor = np.float32(self.scale)

        def scale(w: np.ndarray, first: int) -> np.ndarray:  # rows [first, first + len(w)) of W_O
            for view in head_input_views(w, slices, writer.orientation, first):
                view *= factor
            return w

        program.add_op(info.writer_weight(writer, self.layer), INPUT_SIDE, scale, self.describe(), rowwise=True)
        program.note_head_input(self.layer, self.heads, float(factor))

    def hook(self, model, info: ModelInfo):
        module = model.get_submodule(info.arch.attn.module.format(layer=self.layer))
        slices = head_slices(info, self.heads)
        factor = float(np.float32(self.scale))

        def pre_hook(_module, args):
            x = args[0].clone()
            for sl in slices:
                x[..., sl] *= factor
            return (x, *args[1:])

        return [module.register_forward_pre_hook(pre_hook)]

    def describe(self) -> str:
        heads = ", ".join(str(h) for h in sorted(self.heads))
        return (
            f"layer {self.layer}: attention head{'s' if len(self.heads) > 1 else ''} {heads} scaled by {self.scale:g}"
        )
