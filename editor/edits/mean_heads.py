"""Mean-ablate attention heads: replace each head's output by its average over ordinary text."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from editor.core.bake import INPUT_SIDE, BakeProgram
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit, as_array, check_vector
from editor.edits.heads import check_heads, head_slices, zero_head_inputs


class MeanHeads(Edit):
    """Replace the output ``z_h`` of query heads ``heads`` in block ``layer`` by the constant ``means[i]``.

    ``means[i]`` (``head_dim`` numbers) is head ``heads[i]``'s mean output over ordinary text (BiasScope takes it
    over WikiText-2 tokens that perplexity is not measured on); it is stored here, so the manifest alone rebuilds
    the export. Unlike zeroing, the rest of the model keeps receiving the head's usual average contribution.

    Bake: zero the heads' W_O columns and add ``W_O[:, head] · mean`` to the attention output bias, whose carrier
    rules are residual_add's after attention (an existing bias, a config key, a re-declaration, or a refusal),
    with one difference: the constant is part of o_proj's own output, so a norm applied to that output before the
    residual add (Gemma-2/3, OLMo-2) normalises it exactly as it does under the hooks, and does not stop the bake.
    The constant is computed from W_O after every output-side edit of the plan, as the hooks see it.
    """

    kind: Literal["mean_heads"] = "mean_heads"
    layer: int
    heads: list[int] = Field(min_length=1)
    means: list[list[float]]

    @model_validator(mode="after")
    def _one_mean_per_head(self) -> MeanHeads:
        if len(self.means) != len(self.heads):
            raise ValueError(f"means has {len(self.means)} vectors for {len(self.heads)} heads; give one per head")
        return self

    def validate_for(self, info: ModelInfo) -> None:
        check_heads("mean_heads", self.layer, self.heads, info)
        for head, mean in zip(self.heads, self.means):
            check_vector(mean, info.head_dim, f"mean_heads mean of head {head} (layer {self.layer})", "head_dim")
        # Ask the carrier question on a scratch program so hook and bake refuse alike.
        BakeProgram(info).require_bias(info.arch.attn, self.layer, before_output_norm=True)

    def prepare(self, program: BakeProgram) -> None:
        program.require_bias(program.info.arch.attn, self.layer, before_output_norm=True)

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        writer = info.arch.attn
        slices = head_slices(info, self.heads)
        means = [as_array(m) for m in self.means]
        weight = info.writer_weight(writer, self.layer)
        label = self.describe()

        def zero(w: np.ndarray, first: int) -> np.ndarray:  # rows [first, first + len(w)) of W_O
            return zero_head_inputs(w, slices, writer.orientation, first)

        def add_means(bias: np.ndarray, _first: int, w_out: np.ndarray) -> np.ndarray:
            for head, sl, mean in zip(self.heads, slices, means):
                # A later head edit of the same head (zero, scale) acts on this constant too; read lazily, when
                # every edit of the plan has been compiled.
                factor = np.float32(program.factor_after(self.layer, head, sequence))
                if factor == 0.0:
                    continue
                columns = w_out[:, sl] if writer.orientation == "out_in" else w_out[sl, :].T
                bias = bias + factor * (columns @ mean)
            return bias

        program.add_op(weight, INPUT_SIDE, zero, label, rowwise=True)
        sequence = program.note_head_input(self.layer, self.heads, 0.0)
        bias = program.require_bias(writer, self.layer, before_output_norm=True)
        # Input side: after every output-side op of the bias, since the constant enters W_O's input.
        program.add_op(bias, INPUT_SIDE, add_means, label, reads=(weight,))

    def hook(self, model, info: ModelInfo):
        import torch

        module = model.get_submodule(info.arch.attn.module.format(layer=self.layer))
        slices = head_slices(info, self.heads)
        means = [torch.from_numpy(as_array(m)) for m in self.means]

        def pre_hook(_module, args):
            x = args[0].clone()
            for sl, mean in zip(slices, means):
                x[..., sl] = mean.to(x.device, x.dtype)
            return (x, *args[1:])

        return [module.register_forward_pre_hook(pre_hook)]

    def describe(self) -> str:
        heads = ", ".join(str(h) for h in sorted(self.heads))
        return (
            f"layer {self.layer}: attention head{'s' if len(self.heads) > 1 else ''} {heads} mean-ablated "
            "(output replaced by its mean on ordinary text)"
        )
