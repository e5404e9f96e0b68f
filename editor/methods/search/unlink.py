"""Group-attribute unlinking: low-rank updates of late MLP output projections, fitted to the bias itself.

``erasure`` removes a few directions from the residual stream: the model then reads less of *which* group a
sentence is about, which shrinks the association gap but also everything else group identity feeds. What a
model recalls about a named entity is read largely from its MLPs (the layers ROME-style editing rewrites), so
this method gives each of a few late MLPs a rank-r update of its output
projection, ``W_out += U V^T`` (``U``: residual-stream side, ``V``: neuron side), trained with the model
frozen on the same loss as the erasure (``gap_fit``: the squared association gap of build-fold pairs under a
KL penalty on WikiText-2). Each rank-1 piece is a ``RankOne`` edit, so hook and bake are the project's proven
pair, and a trial scales all of them together.

Measured on SmolLM2 (nationality; rank 4 at layers 20, 22, 24, 26, 28; templates+frames, learning rate 1e-3,
KL weight 20, 12 pairs a step), hooked, fp32, on the test fold the fit never read (groups and attributes of its
own; scripts of the issue-20 notes, not in the suite). After 60 steps, at scale 1.0: gap -80%, the yardstick
frames' likelihood difference -71%, perplexity -0.1%, first-token KL 0.012, pairwise share on 600 test-fold
items 56.4% -> 53.2%. After 100 steps (the default), at scale 1.0: gap -98%, frame difference -89%,
perplexity -0.2%, KL 0.038, pairwise 56.4% -> 50.5% on the 600 items and 52.5% -> 51.2% on the export eval's
160 (select fold 60.0% -> 53.9%); at 1.5 KL reaches 0.108. Rank 8 at every layer from 16 to 29 (100 steps)
took the 600-item share to 48.4% but at KL 0.138. The best ``erase_identity`` fit, measured the same way,
took the gap down 59-67% at +1.0-1.6% perplexity and KL 0.037-0.051 and left the 600-item share at
56.4-57.4%. The fit takes about 4.4 s a step on 2 cores (7 minutes for 100 steps), which is why the method is
not in a search's methods unless named: a 22-trial search of the other methods took 18 minutes on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from editor.core.model_info import ModelInfo
from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold
from editor.edits import RankOne
from editor.errors import EditorError
from editor.methods.search.gap_fit import FitLoop, fit_to_gap

# Where the updates go when no layers are given: every second layer from two thirds of the depth (20, 22, 24,
# 26, 28 of SmolLM2's 30, as measured above).
UNLINK_DEPTH = 2 / 3
# The measured fit's loop: longer, slower and with the contrast frames, where the erasure's default is 40 steps
# of the templates at 3e-3.
UNLINK_LOOP = FitLoop(steps=100, learning_rate=1e-3, prompts="templates+frames")


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


class _LowRankUpdates:
    """Forward hooks adding ``(x V) U^T`` to each chosen MLP output projection, ``x`` its input, as ``RankOne``
    does for each rank-1 piece."""

    def __init__(self, model, info: ModelInfo, layers: list[int]):
        self.model, self.layers = model, layers
        self.modules = [info.arch.writer("mlp").module.format(layer=layer) for layer in layers]
        self.residual_side: list[torch.Tensor] = []  # per layer [hidden, rank]
        self.neuron_side: list[torch.Tensor] = []  # per layer [inner, rank]

    def _hook(self, index: int):
        def add(_module, args, output):
            u, v = self.residual_side[index], self.neuron_side[index]
            x = args[0]
            return output + (x @ v.to(x.dtype)) @ u.T.to(output.dtype)

        return add

    def __enter__(self):
        self.handles = [
            self.model.get_submodule(m).register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def fit_unlink(
    model,
    info: ModelInfo,
    tokenizer,
    all_pairs: list[StereotypePair],
    build: SplitFold,
    generic: torch.Tensor,
    *,
    layers: list[int] | None = None,
    rank: int = 4,
    loop: FitLoop = UNLINK_LOOP,
) -> UnlinkFit:
    """Fit rank-``rank`` updates of the MLP output projections of ``layers`` (null: ``default_unlink_layers``)
    to the build fold's squared gap plus KL on ``generic`` (``gap_fit.fit_to_gap``).

    The residual side starts at zero, so the fit starts from the unedited model; the neuron side starts at
    small random values drawn from ``loop.seed`` (at zero both would have no gradient).
    """
    layers = sorted(set(layers)) if layers else default_unlink_layers(info.num_layers)
    inner = info.intermediate_size
    for layer in layers:  # refused here, not after minutes of fitting
        RankOne(layer=layer, site="mlp", u=[0.0] * info.hidden_size, v=[0.0] * inner).validate_for(info)
    updates = _LowRankUpdates(model, info, layers)
    generator = torch.Generator().manual_seed(loop.seed)

    def parameters(device) -> list[torch.nn.Parameter]:
        updates.residual_side = [torch.nn.Parameter(torch.zeros(info.hidden_size, rank, device=device)) for _ in layers]
        updates.neuron_side = [
            torch.nn.Parameter((torch.randn(inner, rank, generator=generator) / inner**0.5).to(device)) for _ in layers
        ]
        return [*updates.residual_side, *updates.neuron_side]

    losses = fit_to_gap(
        model,
        tokenizer,
        all_pairs,
        build,
        generic,
        parameters,
        lambda: updates,
        method="unlink_mlp",
        loop=loop,
    )
    if not np.all(np.isfinite(losses)):
        raise EditorError("unlink_mlp: the fit diverged (a loss is not finite); lower unlink_learning_rate")
    with torch.no_grad():
        residual = np.stack([u.T.cpu().numpy() for u in updates.residual_side]).astype(np.float32)
        neuron = np.stack([v.T.cpu().numpy() for v in updates.neuron_side]).astype(np.float32)
    return UnlinkFit(layers, residual, neuron, losses)
