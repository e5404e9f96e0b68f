"""Steer2Edit: a steering vector turned into rank-1 edits of single heads and MLP neurons.

Edits ``ΔW_i = λ_i u k_iᵀ`` of single heads (W_O column block) and MLP neurons (down_proj column) with
``u = -v̂``, ``k_i`` read from the component's inputs (by default the whitened biased-minus-neutral input
difference; the published choice, the mean input on biased statements, is kept as a variant), and ``λ``
from one elastic-net problem: make the components' extra output on biased versus neutral statements
cancel the class difference along ``v̂``, with an L1+L2 penalty that keeps few components. Closed form
up to a one-dimensional root.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from editor.core.model_info import ModelInfo
from editor.edits import RankOne
from editor.methods.steer.capture import Activations, GenericStats
from editor.methods.steer.directions import whitened
from editor.methods.steer.settings import KEY_SOURCES


def _soft(x: np.ndarray, t: float) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def elastic_net_budget(a: np.ndarray, target: float, l1: float, l2: float) -> np.ndarray:
    """argmin_λ ½(a·λ - target)² + l1‖λ‖₁ + ½ l2‖λ‖² for target ≥ 0.

    At the optimum λ = S(a r, l1) / l2 with r = target - a·λ the residual; r + a·λ(r) - target is
    non-decreasing in r, negative at 0 and non-negative at target, so bisection finds it.
    """
    lo, hi = 0.0, float(target)
    for _ in range(80):
        r = (lo + hi) / 2
        if r + a @ (_soft(a * r, l1) / l2) - target > 0:
            hi = r
        else:
            lo = r
    return _soft(a * (lo + hi) / 2, l1) / l2


@dataclass
class Component:
    layer: int
    kind: str  # "head" or "neuron"
    index: int
    k: np.ndarray  # input key, scaled so ordinary text gives E[(k·z)²] = 1
    selectivity: float  # k · (mean input on biased - on neutral)


def components(
    acts: Activations,
    info: ModelInfo,
    up_to_layer: int,
    stats: GenericStats,
    keys: str = "contrast",
    shrink: float = 0.1,
) -> list[Component]:
    """Every head and MLP neuron up to ``up_to_layer`` as a candidate, keyed in units of its ordinary-text activity.

    ``keys="biased_mean"`` reads along the component's mean input on biased
    statements (Steer2Edit's k_i as published); ``"contrast"`` reads along the
    whitened biased-minus-neutral input difference, so the edit fires on the
    stereotype rather than on everything the component usually carries.
    """
    if keys not in KEY_SOURCES:
        raise ValueError(f"keys must be one of {KEY_SOURCES}")
    out = []
    d = info.head_dim
    for layer in range(up_to_layer + 1):
        zb, zn = acts.head_means[1][layer], acts.head_means[0][layer]
        for h in range(info.num_heads):
            cols = slice(h * d, (h + 1) * d)
            moment = stats.heads[layer, h]
            key = whitened(zb[cols] - zn[cols], moment, shrink) if keys == "contrast" else zb[cols].astype(np.float64)
            energy = float(key @ moment @ key)
            if energy <= 0:
                continue
            key = key / np.sqrt(energy)
            out.append(Component(layer, "head", h, key.astype(np.float32), float(key @ (zb[cols] - zn[cols]))))
        diff = acts.neuron_means[1][layer] - acts.neuron_means[0][layer]
        scale = 1.0 / np.sqrt(np.maximum(stats.neurons[layer], 1e-12))
        for j in np.flatnonzero(np.abs(diff) > 0):
            out.append(
                Component(layer, "neuron", int(j), np.array([scale[j]], dtype=np.float32), float(diff[j] * scale[j]))
            )
    return out


def steer2edit_plan(
    acts: Activations,
    info: ModelInfo,
    stats: GenericStats,
    vector: np.ndarray,
    layer: int,
    alpha: float,
    keys: str = "contrast",
    max_components: int = 256,
    key_ridge: float = 0.1,
) -> list[RankOne]:
    """Rank-1 edits of heads and neurons up to ``layer`` whose differential output cancels alpha * |v| along v̂.

    Keys carry unit ordinary-text energy, so the elastic net's L2 term is the
    damage the edits add to ordinary text and its L1 term keeps them few.
    """
    comps = components(acts, info, layer, stats, keys, shrink=key_ridge)
    a = np.array([c.selectivity for c in comps])
    norm = float(np.linalg.norm(vector))
    target = alpha * norm
    l2 = 1e-3 * float(a @ a) / max(len(a), 1) + 1e-8
    # Pick the L1 weight so that about max_components survive: the threshold sits at that rank of |a| r.
    ranked = np.sort(np.abs(a))[::-1]
    cut = ranked[min(max_components, len(ranked) - 1)]
    lam = np.zeros_like(a)
    for scale in np.geomspace(1e-6, 1e3, 60):
        lam = elastic_net_budget(a, target, l1=cut * scale * target, l2=l2)
        if np.count_nonzero(lam) <= max_components and abs(a @ lam - target) <= 0.25 * target:
            break
    u = (-vector / norm).tolist()
    edits = []
    for comp, weight in zip(comps, lam):
        if weight == 0:
            continue
        if comp.kind == "head":
            edits.append(
                RankOne(layer=comp.layer, site="attn", head=comp.index, u=u, v=comp.k.tolist(), scale=float(weight))
            )
        else:
            edits.append(
                RankOne(layer=comp.layer, site="mlp", neuron=comp.index, u=u, v=comp.k.tolist(), scale=float(weight))
            )
    return edits
