"""Scale (or remove) whole experts of a mixture-of-experts layer: the expert-level analogue of head removal."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from editor.core.bake import INPUT_SIDE, BakeProgram
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit
from editor.edits.experts import fused_args


class ScaleExperts(Edit):
    """Multiply what the listed experts of MoE layer ``layer`` write by ``scale`` (0 removes them).

    Baked into each expert's down projection. The router still picks the same experts (it reads the residual
    stream, which is unchanged up to this layer), so a removed expert's share of the MLP output is simply gone,
    as a removed head's is. ``"shared"`` names the shared expert of families that have one (Qwen2-MoE).

    Like a head mask this acts on the expert's input side: under the hooks it scales the router's weight for
    the expert (the shared expert's input), so any other edit of the same expert is scaled with it, whatever the
    plan's order; the bake applies it after every output-side op of the tensor.
    """

    kind: Literal["scale_experts"] = "scale_experts"
    layer: int
    experts: list[int | Literal["shared"]] = Field(min_length=1)
    scale: float = Field(0.0, ge=0.0, description="0 removes the experts; 1 leaves them unchanged")

    def _experts(self) -> list[int | Literal["shared"]]:
        return list(dict.fromkeys(self.experts))

    def validate_for(self, info: ModelInfo) -> None:
        info.check_layer(self.layer)
        for expert in self._experts():
            info.check_expert(self.layer, expert)

    def bake(self, program: BakeProgram) -> None:
        info, factor = program.info, np.float32(self.scale)

        def scale(w: np.ndarray, _first: int) -> np.ndarray:
            w *= factor
            return w

        for expert in self._experts():
            program.add_op(info.expert_weight(self.layer, expert), INPUT_SIDE, scale, self.describe(), rowwise=True)

    def hook(self, model, info: ModelInfo):
        import torch

        experts = info.arch.experts
        assert experts is not None
        routed = [e for e in self._experts() if e != "shared"]
        handles = []
        if routed:
            picked = torch.tensor(routed)

            def reweigh(_module, args, kwargs):
                hidden, index, weights = fused_args(args, kwargs)
                hit = torch.isin(index, picked.to(index.device))
                weights = torch.where(hit, weights * self.scale, weights)
                return (hidden, index, weights), {}

            fused = model.get_submodule(experts.fused.format(layer=self.layer))
            handles.append(fused.register_forward_pre_hook(reweigh, with_kwargs=True))
        if "shared" in self._experts():
            assert experts.shared is not None

            def shrink(_module, args):
                return (args[0] * self.scale, *args[1:])

            down = model.get_submodule(experts.shared.format(layer=self.layer))
            handles.append(down.register_forward_pre_hook(shrink))
        return handles

    def describe(self) -> str:
        names = ", ".join("the shared expert" if e == "shared" else f"expert {e}" for e in self._experts())
        effect = "removed" if self.scale == 0 else f"scaled by {self.scale:g}"
        return f"layer {self.layer}: {names} {effect}"
