"""Group-attribute unlinking: low-rank updates of late MLP output projections, fitted to the bias itself.

``erasure`` removes a few directions from the residual stream: the model then reads less of *which* group a
sentence is about, which shrinks the association gap but also everything else group identity feeds. What a
model recalls about a named entity is read largely from its MLPs (the layers ROME-style editing rewrites), so
this fit gives each of a few late MLPs a rank-r update of its output projection, ``W_out += U V^T`` (``U``:
residual-stream side, ``V``: neuron side), trained with the model frozen on the same loss as the erasure
(``loop.fit_to_gap``: the squared association gap of build-fold pairs under a KL penalty on WikiText-2). Each
rank-1 piece is a ``RankOne`` edit, whose hook the fit trains through (``edits.rank_one.low_rank_update``), so
hook and bake are the project's proven pair. ``sites`` may add attention's output projection (W_O) at the same
layers: there the update reads the heads' mixed values, so it can take out what attention carries from the
mention of a group to the words after it. Measured results: the docs' Results page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from editor.edits import RankOne
from editor.edits.rank_one import low_rank_update
from editor.errors import EditorError
from editor.methods.fit.loop import FitInputs, FitLoop, Objective, fit_to_gap
from editor.methods.fit.settings import UNLINK_SITES, UnlinkSite

# Where the updates go when no layers are given: every second layer from two thirds of the depth (20, 22, 24,
# 26, 28 of SmolLM2's 30, where it was measured).
UNLINK_DEPTH = 2 / 3


@dataclass(frozen=True)
class UnlinkFit:
    """What the fit learned: per updated projection (block ``layers[i]``, output projection of ``sites[i]``), r
    residual-side and r input-side vectors; the loss of every step."""

    layers: list[int]
    residual_side: Sequence[np.ndarray]  # per projection [rank, hidden]: the u of each rank-1 piece
    neuron_side: Sequence[np.ndarray]  # per projection [rank, its input width]: its v
    losses: list[float]
    sites: list[UnlinkSite]  # per projection: "mlp" or "attn"

    def targets(self) -> list[tuple[int, UnlinkSite]]:
        return list(zip(self.layers, self.sites))

    def edits(self, scale: float = 1.0) -> list[RankOne]:
        """The plan: one rank-1 update of an output projection per projection and rank, each at ``scale``."""
        return [
            RankOne(layer=layer, site=site, u=u.tolist(), v=v.tolist(), scale=float(scale))
            for (layer, site), us, vs in zip(self.targets(), self.residual_side, self.neuron_side)
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
    sites: Sequence[UnlinkSite] = ("mlp",),
) -> UnlinkFit:
    """Fit rank-``rank`` updates of the output projections of ``sites`` ("mlp": the MLP's down projection,
    "attn": attention's W_O) in blocks ``layers`` (null: ``default_unlink_layers``) to ``objective`` (the build
    fold's squared gap unless given) plus KL on the ordinary text (``loop.fit_to_gap``).

    The residual side starts at zero, so the fit starts from the unedited model; the input side starts at
    small random values drawn from ``loop.seed`` (at zero both would have no gradient). The MLPs' updates come
    first, layer by layer, then attention's, so an MLP-only fit is what it was before attention could be added.
    """
    info = inputs.info
    layers = sorted(set(layers)) if layers else default_unlink_layers(info.num_layers)
    chosen = [site for site in UNLINK_SITES if site in sites]
    if not chosen:
        raise EditorError(f"unlink_mlp.sites: give 'mlp', 'attn' or both, not {list(sites)}")
    moe = [layer for layer in layers if info.is_moe_layer(layer)] if "mlp" in chosen else []
    if moe:
        raise EditorError(
            f"unlink_mlp fits one dense MLP down projection per layer, and layer {moe[0]} of this "
            f"{info.arch.model_type} model is a mixture of experts; fit erase_identity, list dense layers in "
            "unlink_mlp.layers, update only attention (unlink_mlp.sites: [attn]), or (in a search) leave "
            "unlink_mlp out of search.methods"
        )
    targets = [(layer, site) for site in chosen for layer in layers]
    widths = [info.writer_in_features(info.arch.writer(site), layer) for layer, site in targets]
    for (layer, site), width in zip(targets, widths):  # refused here, not after minutes of fitting
        RankOne(layer=layer, site=site, u=[0.0] * info.hidden_size, v=[0.0] * width).validate_for(info)
    modules = [info.arch.writer(site).module.format(layer=layer) for layer, site in targets]
    generator = torch.Generator().manual_seed(loop.seed)
    residual_side: list[torch.Tensor] = []  # per projection [hidden, rank]
    neuron_side: list[torch.Tensor] = []  # per projection [input width, rank]

    def parameters(device) -> list[torch.nn.Parameter]:
        residual_side[:] = [torch.nn.Parameter(torch.zeros(info.hidden_size, rank, device=device)) for _ in targets]
        neuron_side[:] = [
            torch.nn.Parameter((torch.randn(width, rank, generator=generator) / width**0.5).to(device))
            for width in widths
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
        residual = [u.T.cpu().numpy().astype(np.float32) for u in residual_side]
        neuron = [v.T.cpu().numpy().astype(np.float32) for v in neuron_side]
    return UnlinkFit([layer for layer, _ in targets], residual, neuron, losses, [site for _, site in targets])
