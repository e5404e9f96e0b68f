"""A rank-1 update of a residual writer, one head's W_O block, or one MLP neuron."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from editor.core.bake import OUTPUT_SIDE, BakeProgram, block_rows
from editor.core.model_info import Expert, ModelInfo
from editor.edits.base import Edit, as_array, check_vector
from editor.edits.experts import expert_input, fused_args, routing_weight
from editor.errors import EditorError

if TYPE_CHECKING:
    import torch


def low_rank_update(
    x: torch.Tensor, output: torch.Tensor, u: torch.Tensor, v: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``output + scale (x V) Uᵀ``: what ``W += scale U Vᵀ`` adds to a projection's output for its input ``x``
    (``U`` [out, r], ``V`` [in, r]). The one place this algebra lives: ``RankOne``'s hook is the r = 1 case, and
    the unlink fit trains ``U`` and ``V`` through it."""
    return output + ((x @ v.to(x.device, x.dtype)) * scale) @ u.T.to(output.device, output.dtype)


class RankOne(Edit):
    """``W += scale * u v^T`` on the output projection of block ``layer`` at ``site``.

    ``u`` lives in the residual stream (hidden size). ``v`` is an input-side
    direction: the whole input of the projection by default; with ``head`` it
    spans only that attention head's ``head_dim`` columns of W_O; with
    ``neuron`` it is one MLP neuron's down_proj column, and ``v`` is a single
    number (1.0 when omitted). This is Steer2Edit's ``ΔW = λ u kᵀ``.

    In a mixture-of-experts layer the MLP has one down projection per expert:
    ``expert`` picks one (an index, or ``"shared"``), and without it every
    routed expert gets the same update (``v`` and ``neuron`` then index one
    expert's width). Each expert's update is scaled by the router's weight for
    it, as its output is.
    """

    kind: Literal["rank_one"] = "rank_one"
    layer: int
    site: Literal["attn", "mlp"]
    u: list[float]
    v: list[float] | None = None
    scale: float = 1.0
    head: int | None = None
    neuron: int | None = None
    # Left out of the JSON when omitted, so plans and manifests written before the field existed stay byte-identical.
    expert: int | Literal["shared"] | None = Field(default=None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _target_matches_site(self) -> RankOne:
        if self.head is not None and self.site != "attn":
            raise ValueError("'head' needs site 'attn'")
        if self.neuron is not None and self.site != "mlp":
            raise ValueError("'neuron' needs site 'mlp'")
        if self.expert is not None and self.site != "mlp":
            raise ValueError("'expert' needs site 'mlp'")
        if self.v is None and self.neuron is None:
            raise ValueError("'v' is required unless 'neuron' is given")
        return self

    def _input_slice(self, info: ModelInfo) -> tuple[slice, int, str]:
        if self.head is not None:
            d = info.head_dim
            return slice(self.head * d, (self.head + 1) * d), d, "head_dim"
        if self.neuron is not None:
            return slice(self.neuron, self.neuron + 1), 1, "single neuron (1)"
        n = info.writer_in_features(info.arch.writer(self.site), self.layer, self.expert)
        return slice(0, n), n, f"{self.site} output-projection input size"

    def _moe(self, info: ModelInfo) -> bool:
        return self.site == "mlp" and info.is_moe_layer(self.layer)

    def _experts(self, info: ModelInfo) -> list[Expert]:
        """The experts whose down projections the update goes into (every routed one unless ``expert`` names one)."""
        if self.expert is not None:
            return [self.expert]
        return list(range(info.num_experts))

    def _v(self) -> np.ndarray:
        return as_array(self.v if self.v is not None else [1.0])

    def validate_for(self, info: ModelInfo) -> None:
        info.check_layer(self.layer)
        if self.head is not None:
            info.check_head(self.head)
        if self.expert is not None:
            info.check_expert(self.layer, self.expert)
        width = info.writer_in_features(info.arch.mlp, self.layer, self.expert)
        if self.neuron is not None and not 0 <= self.neuron < width:
            raise EditorError(
                f"neuron {self.neuron} is out of range: the MLP"
                + (" expert" if self._moe(info) else "")
                + f" has {width} neurons (0..{width - 1})"
            )
        check_vector(self.u, info.hidden_size, f"rank_one u (layer {self.layer})")
        _, size, size_name = self._input_slice(info)
        check_vector(self.v if self.v is not None else [1.0], size, f"rank_one v (layer {self.layer})", size_name)

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        writer = info.arch.writer(self.site)
        sl, _, _ = self._input_slice(info)
        delta = np.float32(self.scale) * np.outer(as_array(self.u), self._v())  # [out, in-slice]

        def update(w: np.ndarray, first: int) -> np.ndarray:  # rows [first, first + len(w)) of the weight
            if writer.orientation == "out_in":
                w[:, sl] += delta[first : first + len(w)]
            elif meet := block_rows(sl.start, sl.stop, first, len(w)):
                w[meet[0], :] += delta.T[meet[1]]
            return w

        if self._moe(info):
            for expert in self._experts(info):
                program.add_op(
                    info.expert_weight(self.layer, expert), OUTPUT_SIDE, update, self.describe(), rowwise=True
                )
            return
        program.add_op(info.writer_weight(writer, self.layer), OUTPUT_SIDE, update, self.describe(), rowwise=True)

    def hook(self, model, info: ModelInfo):
        import torch

        sl, _, _ = self._input_slice(info)
        u, v = torch.from_numpy(as_array(self.u))[:, None], torch.from_numpy(self._v())[:, None]

        def add(_module, args, output):
            # args are what the projection received, after any head masks.
            return low_rank_update(args[0][..., sl], output, u, v, self.scale)

        experts = info.arch.experts
        if not self._moe(info) or self.expert == "shared":
            name = (
                experts.shared if self._moe(info) and experts and experts.shared else info.arch.writer(self.site).module
            )
            return [model.get_submodule(name.format(layer=self.layer)).register_forward_hook(add)]
        assert experts is not None
        routed = [e for e in self._experts(info) if e != "shared"]

        def add_to_experts(module, args, kwargs, output):
            # the fused module's output is each picked expert's down projection times its router weight, summed
            hidden, index, weights = fused_args(args, kwargs)
            for expert in routed:
                h = expert_input(module, hidden, expert)
                change = low_rank_update(h[..., sl], torch.zeros_like(output), u, v, self.scale)
                output = output + routing_weight(index, weights, expert)[:, None].to(output.dtype) * change
            return output

        fused = model.get_submodule(experts.fused.format(layer=self.layer))
        return [fused.register_forward_hook(add_to_experts, with_kwargs=True)]

    def describe(self) -> str:
        target = (
            f"head {self.head} W_O block"
            if self.head is not None
            else f"MLP neuron {self.neuron}"
            if self.neuron is not None
            else f"{'attention' if self.site == 'attn' else 'MLP'} output projection"
        )
        if self.expert is not None:
            target += " of the shared expert" if self.expert == "shared" else f" of expert {self.expert}"
        norm = float(np.linalg.norm(as_array(self.u)) * np.linalg.norm(self._v())) * abs(self.scale)
        return f"layer {self.layer}: rank-1 update (norm {norm:.3g}) of the {target}"
