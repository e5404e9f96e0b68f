"""From a steering vector to a plan: a residual add, or a (whitened) direction ablated from every writer.

Damage is measured against ordinary text (WikiText-2 second moments): the ablated direction leans away
from what ordinary text carries, which is what keeps perplexity inside a few percent.
"""

from __future__ import annotations

import numpy as np

from editor.edits import AblateDirection, ResidualAdd


def residual_plan(vector: np.ndarray, layer: int, alpha: float) -> list[ResidualAdd]:
    return [ResidualAdd(layer=layer, site="mlp", vector=vector.tolist(), scale=-alpha)]


def ablation_plan(
    vector: np.ndarray, layers: list[int] | None = None, embedding: bool = True, strength: float = 1.0
) -> list[AblateDirection]:
    direction = (vector / np.linalg.norm(vector)).tolist()
    return [AblateDirection(direction=direction, layers=layers, embedding=embedding, strength=strength)]


def whitened(diff: np.ndarray, moment: np.ndarray, shrink: float) -> np.ndarray:
    """(M + shrink·mean-eigenvalue·I)⁻¹ diff: the class difference, leaning away from directions ordinary text fills.

    shrink → ∞ gives back the plain difference of means; small shrink gives the
    direction with the most class difference per unit of ordinary-text energy.
    """
    n = len(diff)
    ridge = shrink * float(np.trace(moment)) / n
    return np.linalg.solve(moment + ridge * np.eye(n), diff.astype(np.float64))


def whitened_direction(diff: np.ndarray, moment: np.ndarray, shrink: float) -> np.ndarray:
    d = whitened(diff, moment, shrink)
    return (d / (np.linalg.norm(d) or 1.0)).astype(np.float32)
