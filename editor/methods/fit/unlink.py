"""Group-attribute unlinking: low-rank updates of late MLP output projections, fitted to the bias itself.

``erasure`` removes a few directions from the residual stream: the model then reads less of *which* group a
sentence is about, which shrinks the association gap but also everything else group identity feeds. What a
model recalls about a named entity is read largely from its MLPs (the layers ROME-style editing rewrites), so
this fit gives each of a few late MLPs a rank-r update of its output projection, ``W_out += U V^T`` (``U``:
residual-stream side, ``V``: neuron side), trained with the model frozen on the same loss as the erasure
(``loop.fit_to_gap``: the squared association gap of build-fold pairs under a KL penalty on WikiText-2). Each
rank-1 piece is a ``RankOne`` edit, whose hook the fit trains through (``edits.rank_one.low_rank_update``), so
hook and bake are the project's proven pair. Measured results: the docs' Results page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from editor.edits import RankOne
from editor.edits.rank_one import low_rank_update
from editor.errors import EditorError
from editor.methods.fit.loop import FitInputs, FitLoop, Objective, fit_to_gap

# Where the updates go when no layers are given: every second layer from two thirds of the depth (20, 22, 24,
# 26, 28 of SmolLM2's 30, where it was measured).
UNLINK_DEPTH = 2 / 3


@dataclass(frozen=True)
class UnlinkFit:
    """What the fit learned: per layer, r residual-side and r neuron-side vectors; the loss of every step."""

    layers: list[int]
    residual_side: np.ndarray  # [layers, rank, hidden]: the u of each rank-1 piece
    neuron_side: np.ndarray  # [layers, rank, mlp inner size]: its v
    losses: list[float]

    def edits(self, scale: float = 1.0) -> list[RankOne]:
        """The plan: one rank-1 update of the MLP output projection per layer and rank, each at ``scale``."""
        return [
            RankOne(layer=layer, site="mlp", u=u.tolist(), v=v.tolist(), scale=float(scale))
            for layer, us, vs in zip(self.layers, self.residual_side, self.neuron_side)
            for u, v in zip(us, vs)
        ]


def default_unlink_layers(num_layers: int) -> list[int]:
    """Every second layer from ``UNLINK_DEPTH`` of the depth, the last one left out (it writes only the logits)."""
    return list(range(round(UNLINK_DEPTH * num_layers), num_layers - 1, 2)) or [num_layers - 1]


def fit_unlink(
    inputs: FitInputs,
    loop: FitLoop,
    *,
    layers: list[int] | None = None,
    rank: int = 4,
    objective: Objective | None = None,
) -> UnlinkFit:
    """Fit rank-``rank`` updates of the MLP output projections of ``layers`` (null: ``default_unlink_layers``)
    to ``objective`` (the build fold's squared gap unless given) plus KL on the ordinary text (``loop.fit_to_gap``).

    The residual side starts at zero, so the fit starts from the unedited model; the neuron side starts at
    small random values drawn from ``loop.seed`` (at zero both would have no gradient).
    """
    info = inputs.info
    layers = sorted(set(layers)) if layers else default_unlink_layers(info.num_layers)
    inner = info.intermediate_size
    moe = [layer for layer in layers if info.is_moe_layer(layer)]
    if moe:
        raise EditorError(
            f"unlink_mlp fits one dense MLP down projection per layer, and layer {moe[0]} of this "
            f"{info.arch.model_type} model is a mixture of experts; fit erase_identity, list dense layers in "
            "unlink_mlp.layers, or (in a search) leave unlink_mlp out of search.methods"
        )
    for layer in layers:  # refused here, not after minutes of fitting
        RankOne(layer=layer, site="mlp", u=[0.0] * info.hidden_size, v=[0.0] * inner).validate_for(info)
    modules = [info.arch.writer("mlp").module.format(layer=layer) for layer in layers]
    generator = torch.Generator().manual_seed(loop.seed)
    residual_side: list[torch.Tensor] = []  # per layer [hidden, rank]
    neuron_side: list[torch.Tensor] = []  # per layer [inner, rank]

    def parameters(device) -> list[torch.nn.Parameter]:
        residual_side[:] = [torch.nn.Parameter(torch.zeros(info.hidden_size, rank, device=device)) for _ in layers]
        neuron_side[:] = [
            torch.nn.Parameter((torch.randn(inner, rank, generator=generator) / inner**0.5).to(device)) for _ in layers
        ]
        return [*residual_side, *neuron_side]

    def update(index: int):
        return lambda _module, args, output: low_rank_update(args[0], output, residual_side[index], neuron_side[index])

    losses = fit_to_gap(
        inputs,
        parameters,
        lambda: {name: update(i) for i, name in enumerate(modules)},
        method="unlink_mlp",
        loop=loop,
        objective=objective,
    )
    if not np.all(np.isfinite(losses)):
        raise EditorError("unlink_mlp: the fit diverged (a loss is not finite); lower unlink_mlp.learning_rate")
    with torch.no_grad():
        residual = np.stack([u.T.cpu().numpy() for u in residual_side]).astype(np.float32)
        neuron = np.stack([v.T.cpu().numpy() for v in neuron_side]).astype(np.float32)
    return UnlinkFit(layers, residual, neuron, losses)
