"""Head removal for BiasScope: the ways to take heads out, their edits, head means, and the damage-aware choice.

A removal turns a set of (layer, head) pairs into edits: ``zero`` (zero_heads),
``mean`` (mean_heads: the output replaced by its mean over ordinary text) or
``scale`` (scale_heads: the output multiplied by a strength in (0, 1)).
A sweep scores each removal at each k on the bias (held-out stereotype logit
gap) and on damage (perplexity, first-token KL, concept retention);
``choose_point`` is the rule that picks one point, kept apart so that any
search over removals (or across methods) can reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from editor.core.model_info import ModelInfo
from editor.edits import Edit, MeanHeads, ScaleHeads, ZeroHeads
from editor.engines.placement import input_device
from editor.methods import tradeoff

RemovalKind = Literal["zero", "mean", "scale"]


@dataclass(frozen=True)
class Removal:
    """How heads are taken out: zeroed, mean-ablated, or scaled by ``strength``."""

    kind: RemovalKind
    strength: float = 0.0  # scale only: the factor the heads' outputs are multiplied by

    @property
    def label(self) -> str:
        return {"zero": "zeroed", "mean": "mean-ablated"}.get(self.kind, f"scaled by {self.strength:g}")

    def edits(self, heads: Sequence[tuple[int, int]], means: np.ndarray | None = None) -> list[Edit]:
        """One edit per layer; ``means`` ([layers, heads, head_dim]) is needed by the mean removal."""
        by_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            by_layer.setdefault(layer, []).append(head)
        edits: list[Edit] = []
        for layer, hs in sorted(by_layer.items()):
            hs = sorted(hs)
            if self.kind == "zero":
                edits.append(ZeroHeads(layer=layer, heads=hs))
            elif self.kind == "scale":
                edits.append(ScaleHeads(layer=layer, heads=hs, scale=self.strength))
            else:
                if means is None:
                    raise ValueError("internal: the mean removal needs the heads' means")
                edits.append(MeanHeads(layer=layer, heads=hs, means=[means[layer, h].tolist() for h in hs]))
        return edits


def removals_for(kinds: Sequence[str], scales: Sequence[float]) -> list[Removal]:
    """The removals a sweep tries, in the settings' order (scale once per strength)."""
    out: list[Removal] = []
    for kind in kinds:
        if kind == "scale":
            out += [Removal("scale", float(s)) for s in scales]
        else:
            out.append(Removal(kind))  # type: ignore[arg-type]
    return out


@dataclass
class KPoint:
    """One removal of the robust top-k heads, scored with hooks. Damage is None where it was not measured."""

    removal: str  # Removal.label
    kind: str
    strength: float
    k: int
    heads: list[tuple[int, int]]
    gap: float
    perplexity: float | None = None
    kl: float | None = None
    concept_hit_rate: float | None = None
    concept_logprob: float | None = None

    def damage(self, base_perplexity: float) -> float | None:
        """Relative perplexity increase over the base (0.05 = +5%)."""
        return None if self.perplexity is None else self.perplexity / base_perplexity - 1.0


@dataclass
class Choice:
    """What ``choose_point`` saw and picked (``point`` None: no point inside the budget lowers the bias)."""

    point: KPoint | None
    budget: float
    base_perplexity: float
    baseline_gap: float
    eligible: list[KPoint] = field(default_factory=list)


def choose_point(points: Sequence[KPoint], baseline_gap: float, base_perplexity: float, budget: float) -> Choice:
    """The point that lowers the held-out bias most within the damage budget (``tradeoff.Rule``).

    Eligible: heads removed, perplexity measured and at most ``base_perplexity * (1 + budget)``, and the gap
    lowered by at least ``MIN_GAIN`` of the baseline's size while ending closer to zero than it started. Among
    those, the gap closest to zero wins; ties go to the lower perplexity, then to fewer heads. A baseline at or
    below zero has no stereotype to remove on the held-out questions, so nothing is eligible.
    """
    rule: tradeoff.Rule[KPoint] = tradeoff.Rule(
        baseline_gap, lambda p: p.gap, lambda p: p.damage(base_perplexity), budget, inside=lambda p: bool(p.heads)
    )
    best = rule.choose(points, tie=lambda p: (len(p.heads),))
    return Choice(best, budget, base_perplexity, baseline_gap, rule.eligible(points))


def saturation_k(ks: Sequence[int], gaps: Sequence[float], baseline: float, fraction: float = 0.9) -> int:
    """Smallest k reaching ``fraction`` of the largest drop below ``baseline`` (where the bias curve saturates)."""
    drop = baseline - min(gaps)
    if drop <= 0:
        return ks[0]
    for k, gap in zip(ks, gaps):
        if baseline - gap >= fraction * drop:
            return k
    return ks[-1]


@torch.no_grad()
def head_means(model, info: ModelInfo, tokens: torch.Tensor, window: int = 512) -> np.ndarray:
    """[layers, heads, head_dim]: every head's mean output (its W_O input) over ``tokens``.

    The text is read in windows; each window's first position is left out, because there the heads attend
    only to that token and their outputs are far from their usual distribution.
    """
    device = input_device(model)
    sums = torch.zeros(info.num_layers, info.num_heads * info.head_dim, dtype=torch.float64)
    count = 0
    handles = []
    for layer in range(info.num_layers):
        module = model.get_submodule(info.arch.attn.module.format(layer=layer))

        def keep(_module, args, i=layer):
            sums[i] += args[0][0, 1:].double().sum(0).cpu()

        handles.append(module.register_forward_pre_hook(keep))
    try:
        for start in range(0, len(tokens), window):
            chunk = tokens[start : start + window]
            if len(chunk) < 2:
                break
            model(input_ids=chunk.unsqueeze(0).to(device), logits_to_keep=1)
            count += len(chunk) - 1
    finally:
        for handle in handles:
            handle.remove()
    means = (sums / max(count, 1)).float().numpy()
    return means.reshape(info.num_layers, info.num_heads, info.head_dim)
