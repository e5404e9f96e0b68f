"""Linear probes per layer (stereotyped vs neutral) and the difference-of-means steering vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from editor.methods.steer.capture import Activations


@dataclass
class ProbeResult:
    layer: int
    strength: float  # inverse regularisation C chosen on validation
    val_accuracy: float
    test_accuracy: float
    direction: np.ndarray  # unit probe weight in the residual space


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float, steps: int = 100) -> torch.Tensor:
    w = torch.zeros(x.shape[1] + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xb @ w, y) + (w[:-1] @ w[:-1]) / (2 * c * len(x))
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)
    return float(((xb @ w > 0).float() == y).float().mean())


def train_probes(acts: Activations, seed: int = 0, strengths=(0.01, 0.1, 1.0, 10.0)) -> list[ProbeResult]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(acts.labels))
    n = len(order)
    train, val, test = order[: int(0.6 * n)], order[int(0.6 * n) : int(0.8 * n)], order[int(0.8 * n) :]
    y = torch.tensor(acts.labels, dtype=torch.float32)
    results = []
    for layer in range(acts.residual.shape[1]):
        x = torch.tensor(acts.residual[:, layer])
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        xs = (x - mu) / sd

        fits = [(c, _fit_logistic(xs[train], y[train], c)) for c in strengths]
        c, w = max(fits, key=lambda cw: _accuracy(cw[1], xs[val], y[val]))
        direction = (w[:-1] / sd).numpy()  # back to unstandardised coordinates
        direction = direction / (np.linalg.norm(direction) or 1.0)
        results.append(
            ProbeResult(
                layer, c, _accuracy(w, xs[val], y[val]), _accuracy(w, xs[test], y[test]), direction.astype(np.float32)
            )
        )
    return results


def site_stream(acts: Activations, site: str) -> np.ndarray:
    """[n, layers, hidden] token means at ``site``: ``block`` the stream after each block, ``attn`` the stream
    after its attention add, ``mlp`` what the MLP sub-block adds (the first less the second)."""
    if site == "block":
        return acts.residual
    if site == "attn":
        return acts.after_attention
    if site == "mlp":
        return acts.residual - acts.after_attention
    raise ValueError(f"site {site!r} is not one of block, attn, mlp")


def mean_difference(acts: Activations, site: str = "block") -> np.ndarray:
    """[layers, hidden]: mean(biased) - mean(neutral) at ``site`` of each block (see ``site_stream``)."""
    stream = site_stream(acts, site)
    biased = stream[acts.labels == 1].mean(0)
    neutral = stream[acts.labels == 0].mean(0)
    return (biased - neutral).astype(np.float32)
