"""Project one direction out of everything that writes the residual stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from editor.core.bake import OUTPUT_SIDE, BakeProgram, rows_per_block
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit, check_vector, unit
from editor.errors import RefusedEdit

if TYPE_CHECKING:
    import torch


def project_out(output: torch.Tensor, basis: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """``output`` less ``shares`` of its components along the orthonormal columns of ``basis`` ([hidden, k]):
    ``x - ((x B) * s) Bᵀ``. The one place this algebra lives: ``AblateDirection``'s hook is the k = 1 case, and
    the erasure fit trains ``basis`` and ``shares`` through it."""
    basis = basis.to(output.device, output.dtype)
    return output - ((output @ basis) * shares.to(output.device, output.dtype)) @ basis.T


def writer_modules(info: ModelInfo, layers: list[int], sites: list[str] | None, embedding: bool) -> list[str]:
    """The modules whose outputs a direction is projected out of: the writers of ``layers`` at ``sites`` (every
    writer when None), then the embeddings when ``embedding``."""
    modules = [
        module
        for layer in layers
        for w in info.arch.writers
        if sites is None or w.site in sites
        for module in info.output_modules(w, layer)
    ]
    return modules + (list(info.arch.embeddings) if embedding else [])


class AblateDirection(Edit):
    """Remove the component along ``direction`` from the outputs of attention and MLP blocks.

    ``layers`` limits which blocks are edited (all when omitted); ``embedding``
    also projects the token (and position) embeddings. With tied embeddings
    the export unties lm_head so the readout is unchanged, as it is under the
    hook. Exact for pre-norm models; refused where a norm sits between a
    writer and the residual add.

    ``strength`` below 1 removes only that share of the component (``x -
    s (x·r) r``), the weight kernel Heretic applies to its ablations: a knob
    between bias removed and damage done, still one linear map per writer.

    ``sites`` limits the writers to attention or MLP outputs (both when
    omitted). Attention alone is what moves a word's information to later
    positions: projecting a group-identity direction out of attention outputs
    only keeps it at the group's own word, which ordinary text needs, while
    the word a stereotype would follow can no longer read it.
    """

    kind: Literal["ablate_direction"] = "ablate_direction"
    direction: list[float]
    layers: list[int] | None = None
    embedding: bool = True
    strength: float = Field(1.0, gt=0.0, le=1.0)
    # Left out of the JSON when omitted, so plans and manifests written before the field existed stay byte-identical.
    sites: list[Literal["attn", "mlp"]] | None = Field(default=None, min_length=1, exclude_if=lambda v: v is None)

    def _layers(self, info: ModelInfo) -> list[int]:
        return list(range(info.num_layers)) if self.layers is None else sorted(set(self.layers))

    def _writers(self, info: ModelInfo):
        return [w for w in info.arch.writers if self.sites is None or w.site in self.sites]

    def validate_for(self, info: ModelInfo) -> None:
        check_vector(self.direction, info.hidden_size, "ablate_direction direction")
        unit(self.direction, "ablate_direction direction")
        for layer in self._layers(info):
            info.check_layer(layer)
        normed = [w.output_norm for w in self._writers(info) if w.output_norm]
        if normed:
            norm = normed[0]
            raise RefusedEdit(
                f"{info.arch.model_type}: {norm.format(layer='N')} renormalises each block output before the residual add, "
                "so projecting a direction out of o_proj/down_proj does not remove it from the stream"
            )

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        r = unit(self.direction, "direction")
        s = np.float32(self.strength)
        label = self.describe()

        def project_rows_out(w: np.ndarray, _first: int) -> np.ndarray:  # output dim first: W <- (I - s r r^T) W
            # r @ w sums over every row, so this sees the whole tensor; the update then goes a block of rows at a
            # time, in place (the same float32 operations as w - s * outer(r, r @ w), without three full copies).
            along = r @ w
            step = rows_per_block(w.shape)
            for first in range(0, len(w), step):
                change = np.outer(r[first : first + step], along)
                change *= s
                w[first : first + step] -= change
            return w

        def project_cols_out(w: np.ndarray, _first: int) -> np.ndarray:  # output dim last: W <- W (I - s r r^T)
            change = np.outer(w @ r, r)  # row by row, so it runs block by block; the float32 steps of
            change *= s  # w - s * outer(w @ r, r), in place
            w -= change
            return w

        def project_vec(b: np.ndarray, _first: int) -> np.ndarray:
            return b - s * r * (r @ b)

        for layer in self._layers(info):
            for writer in self._writers(info):
                for weight in info.writer_weights(writer, layer):  # an MoE MLP: every expert's down projection
                    if writer.orientation == "out_in":
                        program.add_op(weight, OUTPUT_SIDE, project_rows_out, label)
                    else:
                        program.add_op(weight, OUTPUT_SIDE, project_cols_out, label, rowwise=True)
                bias = program.bias_name(writer, layer)
                if bias is not None:
                    program.add_op(bias, OUTPUT_SIDE, project_vec, label)
        if self.embedding:
            program.untie_lm_head()
            for emb in info.arch.embeddings:
                program.add_op(info.tensor_name(emb), OUTPUT_SIDE, project_cols_out, label, rowwise=True)

    def hook(self, model, info: ModelInfo):
        import torch

        basis = torch.from_numpy(unit(self.direction, "direction"))[:, None]
        shares = torch.tensor([self.strength], dtype=torch.float32)

        def project(_module, _args, output):
            return project_out(output, basis, shares)

        modules = writer_modules(info, self._layers(info), self.sites, self.embedding)  # type: ignore[arg-type]
        return [model.get_submodule(m).register_forward_hook(project) for m in modules]

    def describe(self) -> str:
        where = "all blocks" if self.layers is None else f"blocks {', '.join(map(str, sorted(set(self.layers))))}"
        emb = " and the embeddings" if self.embedding else ""
        share = "" if self.strength == 1.0 else f" ({self.strength:.0%} of its component)"
        writes = "residual writes" if self.sites is None else f"{' and '.join(self.sites)} outputs"
        return f"one direction projected out of the {writes} of {where}{emb}{share}"
