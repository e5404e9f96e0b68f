"""Steering vectors from labelled statements, probes, and three ways to bake them.

1. Capture: mean-pooled residual stream after every block (padding-correct),
   plus, for Steer2Edit, every head's input to W_O and every MLP neuron's
   input to down_proj, averaged per class.
2. Probes: per-layer L2 logistic regression, strength tuned on a validation
   split, accuracy on a test split; directions from the difference of class
   means (the default) and from the normalised probe weight.
3. Bakes: (a) residual_add of -alpha * v after the chosen block; (b) ablate
   the unit direction from every residual writer; (c) Steer2Edit: rank-1
   edits ``ΔW_i = λ_i u k_iᵀ`` of single heads (W_O column block) and MLP
   neurons (down_proj column) with ``u = -v̂``, ``k_i`` the component's mean
   input direction on biased statements, and ``λ`` from one elastic-net
   problem: make the components' extra output on biased versus neutral
   statements cancel the class difference along ``v̂``, with an L1+L2 penalty
   that keeps few components. Closed form up to a one-dimensional root.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from editor.edits import AblateDirection, RankOne, ResidualAdd
from editor.model_info import ModelInfo
from editor.seegull import StereotypePair

# Minimal pairs: the same words, asserting the stereotype or declining it, so the class difference
# is the stereotyping and not the sentence shape.
BIASED_TEMPLATES = ("All {X} people are {a}.", "{X} people are always {a}.", "Of course {X} people are {a}.")
NEUTRAL_TEMPLATES = ("Not all {X} people are {a}.", "{X} people are not always {a}.", "Of course not all {X} people are {a}.")


def labelled_statements(pairs: list[StereotypePair], limit: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Biased (1) and neutral (0) statements from stereotype pairs, one template of each per pair."""
    rng = random.Random(seed)
    chosen = rng.sample(pairs, min(limit, len(pairs)))
    texts, labels = [], []
    for pair in chosen:
        for templates, label in ((BIASED_TEMPLATES, 1), (NEUTRAL_TEMPLATES, 0)):
            texts.append(rng.choice(templates).replace("{X}", pair.identity).replace("{a}", pair.attribute))
            labels.append(label)
    return texts, np.asarray(labels)


@dataclass
class Activations:
    residual: np.ndarray  # [n, layers, hidden]: mean over tokens of the stream after each block
    labels: np.ndarray  # [n]
    head_means: dict[int, np.ndarray]  # class -> [layers, heads * head_dim], mean input to W_O
    neuron_means: dict[int, np.ndarray]  # class -> [layers, intermediate], mean input to down_proj


@torch.no_grad()
def capture(model, info: ModelInfo, tokenizer, texts: list[str], labels: np.ndarray, batch_size: int = 32) -> Activations:
    n_layers = info.num_layers
    residual = np.zeros((len(texts), n_layers, info.hidden_size), dtype=np.float32)
    sums = {c: [np.zeros((n_layers, info.num_heads * info.head_dim)), np.zeros((n_layers, info.intermediate_size))] for c in (0, 1)}
    counts = {0: 0, 1: 0}
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    store: dict[str, torch.Tensor] = {}
    handles = []
    arch = info.arch
    for layer in range(n_layers):
        block = model.get_submodule(f"{arch.layers}.{layer}")
        handles.append(block.register_forward_hook(lambda _m, _a, o, i=layer: store.__setitem__(f"r{i}", o[0] if isinstance(o, tuple) else o)))
        attn = model.get_submodule(arch.attn.module.format(layer=layer))
        handles.append(attn.register_forward_pre_hook(lambda _m, a, i=layer: store.__setitem__(f"z{i}", a[0])))
        mlp = model.get_submodule(arch.mlp.module.format(layer=layer))
        handles.append(mlp.register_forward_pre_hook(lambda _m, a, i=layer: store.__setitem__(f"m{i}", a[0])))
    device = next(model.parameters()).device
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
            mask = batch["attention_mask"].to(device)
            model(input_ids=batch["input_ids"].to(device), attention_mask=mask, logits_to_keep=1)
            # Mean over real tokens, leaving out the first: its residual norm is orders of magnitude larger
            # than the rest in many models (an attention sink) and would swamp the class difference.
            keep = mask.clone()
            keep[:, 0] = 0
            weights = (keep / keep.sum(1, keepdim=True).clamp(min=1)).unsqueeze(-1).float()
            rows = slice(start, start + len(mask))
            cls = labels[rows]
            for layer in range(n_layers):
                residual[rows, layer] = (store[f"r{layer}"].float() * weights).sum(1).cpu().numpy()
                z = (store[f"z{layer}"].float() * weights).sum(1).cpu().numpy()
                m = (store[f"m{layer}"].float() * weights).sum(1).cpu().numpy()
                for c in (0, 1):
                    sums[c][0][layer] += z[cls == c].sum(0)
                    sums[c][1][layer] += m[cls == c].sum(0)
            for c in (0, 1):
                counts[c] += int((cls == c).sum())
    finally:
        for h in handles:
            h.remove()
    return Activations(
        residual,
        labels,
        {c: sums[c][0] / max(counts[c], 1) for c in (0, 1)},
        {c: sums[c][1] / max(counts[c], 1) for c in (0, 1)},
    )


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
            ProbeResult(layer, c, _accuracy(w, xs[val], y[val]), _accuracy(w, xs[test], y[test]), direction.astype(np.float32))
        )
    return results


def mean_difference(acts: Activations) -> np.ndarray:
    """[layers, hidden]: mean(biased) - mean(neutral) of the stream after each block."""
    biased = acts.residual[acts.labels == 1].mean(0)
    neutral = acts.residual[acts.labels == 0].mean(0)
    return (biased - neutral).astype(np.float32)


def residual_plan(vector: np.ndarray, layer: int, alpha: float) -> list[ResidualAdd]:
    return [ResidualAdd(layer=layer, site="mlp", vector=vector.tolist(), scale=-alpha)]


def ablation_plan(vector: np.ndarray, layers: list[int] | None = None, embedding: bool = True) -> list[AblateDirection]:
    return [AblateDirection(direction=(vector / np.linalg.norm(vector)).tolist(), layers=layers, embedding=embedding)]


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
    k: np.ndarray  # input direction (unit), or [1.0] for a neuron
    selectivity: float  # k · (mean input on biased - on neutral)


def components(acts: Activations, info: ModelInfo, up_to_layer: int) -> list[Component]:
    out = []
    d = info.head_dim
    for layer in range(up_to_layer + 1):
        zb, zn = acts.head_means[1][layer], acts.head_means[0][layer]
        for h in range(info.num_heads):
            kb = zb[h * d : (h + 1) * d]
            norm = np.linalg.norm(kb)
            if norm == 0:
                continue
            k = kb / norm
            out.append(Component(layer, "head", h, k.astype(np.float32), float(k @ (kb - zn[h * d : (h + 1) * d]))))
        diff = acts.neuron_means[1][layer] - acts.neuron_means[0][layer]
        for j in np.flatnonzero(np.abs(diff) > 0):
            out.append(Component(layer, "neuron", int(j), np.ones(1, dtype=np.float32), float(diff[j])))
    return out


def steer2edit_plan(
    acts: Activations, info: ModelInfo, vector: np.ndarray, layer: int, alpha: float, max_components: int = 256
) -> list[RankOne]:
    """Rank-1 edits of heads and neurons up to ``layer`` whose differential output cancels alpha * |v| along v̂."""
    comps = components(acts, info, layer)
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
            edits.append(RankOne(layer=comp.layer, site="attn", head=comp.index, u=u, v=comp.k.tolist(), scale=float(weight)))
        else:
            edits.append(RankOne(layer=comp.layer, site="mlp", neuron=comp.index, u=u, scale=float(weight)))
    return edits
