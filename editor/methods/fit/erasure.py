"""Learned identity erasure: group-identity directions fitted by gradient descent to the bias itself.

``steer.identity.identity_subspace`` picks, in closed form, the directions along which groups spread most per unit
of the energy ordinary text carries: it reads where groups differ, not whether that difference makes the model
link a group to an attribute. This fit trains the same kind of edit on the bias. A few orthonormal directions and
one share each (an ``AblateDirection`` apiece, projected out of every residual write and the embeddings, so the
bake is exact) are trained, with the model frozen, to shrink the squared association gap of build-fold pairs
under a penalty on the KL divergence from the base model on ordinary text (``loop.fit_to_gap``). The fit starts
from the closed-form subspace and has only k x hidden numbers to move, which is why it carries to groups and
attributes it never saw. Measured results: the docs' Results page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from editor.edits import AblateDirection
from editor.edits.ablate import project_out, writer_modules
from editor.methods.fit.loop import FitInputs, FitLoop, Objective, fit_to_gap
from editor.methods.steer.capture import generic_stats
from editor.methods.steer.identity import identity_covariances, identity_subspace

# Depth of the layer whose identity subspace starts the fit (layer 25 of SmolLM2's 30, where it was measured).
ERASE_DEPTH = 0.83
START_RIDGE = 0.04  # the identity subspace the fit starts from (the best ablate_identity trial's ridge)


@dataclass(frozen=True)
class ErasureFit:
    """What the fit learned: orthonormal rows and the share of each projected out; the loss of every step."""

    directions: np.ndarray  # [k, hidden], orthonormal
    shares: np.ndarray  # [k], in (0, 1)
    losses: list[float]  # squared gap + weighted KL of each step's batch

    def edits(self, scale: float = 1.0) -> list[AblateDirection]:
        """The plan: each direction out of every residual write and the embeddings, at ``scale`` x its share."""
        return [
            AblateDirection(direction=row.tolist(), strength=float(np.clip(scale * share, 1e-3, 1.0)), embedding=True)
            for row, share in zip(self.directions, self.shares)
        ]


def erase_start_layer(layers: list[int], num_layers: int) -> int:
    """The layer of ``layers`` nearest ``ERASE_DEPTH``: its identity subspace is where the fit starts."""
    return min(layers, key=lambda candidate: abs(candidate - ERASE_DEPTH * num_layers))


def start_basis(
    inputs: FitInputs, layer: int, k: int, covariance: np.ndarray | None = None, moment: np.ndarray | None = None
) -> np.ndarray:
    """[k, hidden]: the closed-form identity subspace of block ``layer``, the fit's starting point. The build
    fold's identity covariance and the ordinary-text moment there are measured unless given (a search that
    already measured them passes them). Refused here, not after minutes of fitting, where the architecture cannot
    take the projection."""
    if covariance is None:
        groups = sorted({p.identity for p in inputs.build.pairs})
        covariance = identity_covariances(inputs.model, inputs.info, inputs.tokenizer, groups, [layer])[layer]
    if moment is None:
        moment = generic_stats(inputs.model, inputs.info, inputs.generic, [layer]).residual[layer]
    basis = identity_subspace(covariance, moment, k, START_RIDGE)
    AblateDirection(direction=basis[0].tolist(), embedding=True).validate_for(inputs.info)
    return basis


def fit_erasure(inputs: FitInputs, start: np.ndarray, loop: FitLoop, objective: Objective | None = None) -> ErasureFit:
    """Fit ``start``'s span ([k, hidden] rows) and k shares to the build fold's squared gap plus KL on the
    ordinary text (``loop.fit_to_gap``)."""
    info = inputs.info
    modules = writer_modules(info, list(range(info.num_layers)), None, embedding=True)
    raw: torch.Tensor | None = None  # [hidden, k], any span
    logits: torch.Tensor | None = None  # [k]

    def parameters(device) -> list[torch.nn.Parameter]:
        nonlocal raw, logits
        # A copy: the optimiser steps in place, and the caller's array must not move with it.
        raw = torch.nn.Parameter(torch.tensor(np.array(start.T, dtype=np.float32), device=device))
        logits = torch.nn.Parameter(torch.zeros(len(start), device=device))  # shares start at one half
        return [raw, logits]

    def hooks() -> dict:
        basis, _ = torch.linalg.qr(raw)  # this step's orthonormal directions and shares
        shares = torch.sigmoid(logits)
        return {name: lambda _module, _args, output: project_out(output, basis, shares) for name in modules}

    losses = fit_to_gap(inputs, parameters, hooks, method="erase_identity", loop=loop, objective=objective)
    assert raw is not None and logits is not None
    with torch.no_grad():
        basis, _ = torch.linalg.qr(raw)
        shares = torch.sigmoid(logits)
    return ErasureFit(basis.T.cpu().numpy().astype(np.float32), shares.cpu().numpy().astype(np.float32), losses)
