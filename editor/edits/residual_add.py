"""Add a constant vector to the residual stream after a sub-block."""

from __future__ import annotations

from typing import Literal

import numpy as np

from editor.core.bake import OUTPUT_SIDE, BakeProgram
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit, as_array, check_vector


class ResidualAdd(Edit):
    """Add ``scale * vector`` to the residual stream after the attention (``attn``) or MLP (``mlp``) sub-block.

    Baked into the bias of the sub-block's output projection, which is added
    to the stream unchanged in pre-norm models. Because a bias acts at every
    position, the add applies to prompt tokens as well as generated ones,
    exactly like a steering hook that fires on every position.
    """

    kind: Literal["residual_add"] = "residual_add"
    layer: int
    site: Literal["attn", "mlp"] = "mlp"
    vector: list[float]
    scale: float = 1.0

    def validate_for(self, info: ModelInfo) -> None:
        info.check_layer(self.layer)
        check_vector(self.vector, info.hidden_size, f"residual_add vector (layer {self.layer})")
        # Ask the carrier question on a scratch program so hook and bake refuse alike.
        BakeProgram(info).require_bias(info.arch.writer(self.site), self.layer)

    def prepare(self, program: BakeProgram) -> None:
        program.require_bias(program.info.arch.writer(self.site), self.layer)

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        name = program.require_bias(info.arch.writer(self.site), self.layer)
        delta = np.float32(self.scale) * as_array(self.vector)
        program.add_op(name, OUTPUT_SIDE, lambda b, _first: b + delta, self.describe())

    def hook(self, model, info: ModelInfo):
        import torch

        module = model.get_submodule(info.arch.writer(self.site).module.format(layer=self.layer))
        delta = self.scale * torch.from_numpy(as_array(self.vector))

        def add(_module, _args, output):
            return output + delta.to(output.device, output.dtype)

        return [module.register_forward_hook(add)]

    def describe(self) -> str:
        norm = float(np.linalg.norm(as_array(self.vector))) * abs(self.scale)
        where = "attention" if self.site == "attn" else "MLP"
        return f"layer {self.layer}: constant vector (norm {norm:.3g}) added after the {where} sub-block"
