"""BiasScope for mixture-of-experts models: the experts that write a stereotype, and their removal.

Each expert's direct effect on the contrastive logit gap is read in the same forward passes as the heads'
(``head_scores``: its router weight times its down projection of its own input, at the last position). The
robust top-k experts (in the top k of every seed, positive score) are removed with ``scale_experts`` under
hooks for k = 1.. ``K_MAX``, each point scored on the held-out gap and on the same damage yardsticks as a head
removal, and the same rule picks one point inside the damage budget.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tqdm.auto import tqdm

from editor.core.hooks import hooked
from editor.edits import ScaleExperts
from editor.methods.attribute.ksweep import SweepInputs
from editor.methods.attribute.ranking import robust_heads
from editor.methods.attribute.removal import KPoint, choose_point

K_MAX = 8  # experts removed at most: each is a whole MLP's worth of parameters
LABEL = "experts zeroed"


def removal_edits(experts: list[tuple[int, int]]) -> list[ScaleExperts]:
    """One ``scale_experts`` (scale 0) per layer."""
    by_layer: dict[int, list[int]] = {}
    for layer, expert in experts:
        by_layer.setdefault(layer, []).append(expert)
    return [ScaleExperts(layer=layer, experts=sorted(es), scale=0.0) for layer, es in sorted(by_layer.items())]


def expert_sweep(
    model, inputs: SweepInputs, seed_scores: list[np.ndarray], baseline: float
) -> tuple[list[KPoint], KPoint | None]:
    """Every robust top-k expert set removed with hooks, its gap and damage; the point the damage rule picks."""
    total = seed_scores[0].size
    sets = {k: robust_heads(seed_scores, k) for k in range(1, min(K_MAX, total) + 1)}
    points: list[KPoint] = []
    seen: dict[frozenset, KPoint] = {}
    for k, experts in tqdm(sets.items(), desc="expert sweep", disable=not inputs.progress):
        key = frozenset(experts)
        if key not in seen:
            point = KPoint(LABEL, "zero", 0.0, k, list(experts), baseline)
            if experts:
                with hooked(model, removal_edits(experts), inputs.info):
                    point.gap = inputs.gap()
                    inputs.meter.measure(model, point)
            seen[key] = point
        points.append(replace(seen[key], k=k))
    base = inputs.meter.base.perplexity or 0.0
    return points, choose_point(points, baseline, base, inputs.budget).point
