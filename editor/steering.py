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
   neurons (down_proj column) with ``u = -v̂``, ``k_i`` read from the
   component's inputs (by default the whitened biased-minus-neutral input
   difference; the published choice, the mean input on biased statements, is
   kept as a variant), and ``λ`` from one elastic-net problem: make the
   components' extra output on biased versus neutral statements cancel the
   class difference along ``v̂``, with an L1+L2 penalty that keeps few
   components. Closed form up to a one-dimensional root.

Damage is measured against ordinary text (WikiText-2 second moments): the
ablated direction and the Steer2Edit keys lean away from what ordinary text
carries, which is what keeps perplexity inside a few percent.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.edits import AblateDirection, RankOne, ResidualAdd
from editor.errors import EditorError
from editor.model_info import ModelInfo
from editor.seegull import StereotypePair, not_stereotyped_with

# Biased and neutral statements share the template and the attribute and differ only in who they are
# about: a group SeeGULL annotators link to the attribute, or one nobody links to it. The class
# difference is then "this matches a stereotype", not a word such as "not" that ordinary text is full of
# (a negation contrast gives a direction whose ablation doubles perplexity).
STATEMENT_TEMPLATES = ("{X} people are {a}.", "Everyone knows {X} people are {a}.", "Most {X} people are {a}.")
# The other contrast, kept as an option: the same pair asserted or hedged. Its vector is a constant shift
# that a residual add can use (on SmolLM2 it lowered the gap at +4.6% perplexity), but its direction is
# mostly "not", which ablation cannot remove without harm.
ASSERTED_TEMPLATES = ("All {X} people are {a}.", "{X} people are always {a}.", "Of course {X} people are {a}.")
HEDGED_TEMPLATES = ("Not all {X} people are {a}.", "{X} people are not always {a}.", "Of course not all {X} people are {a}.")
CONTRASTS = ("identity", "negation")


def labelled_statements(
    pairs: list[StereotypePair], all_pairs: list[StereotypePair], limit: int, seed: int = 0, contrast: str = "identity"
) -> tuple[list[str], np.ndarray]:
    """Biased (1) and neutral (0) statements, one of each per stereotype pair.

    ``identity``: one template, the stereotyped group vs a group nobody links
    to the attribute. ``negation``: the stereotyped group, asserted vs hedged.
    """
    if contrast not in CONTRASTS:
        raise EditorError(f"contrast {contrast!r} is not one of {', '.join(CONTRASTS)}")
    rng = random.Random(seed)
    chosen = rng.sample(pairs, min(limit, len(pairs)))
    texts, labels = [], []
    for pair in chosen:
        if contrast == "negation":
            rows = [(rng.choice(ASSERTED_TEMPLATES), pair.identity, 1), (rng.choice(HEDGED_TEMPLATES), pair.identity, 0)]
        else:
            pool = not_stereotyped_with(all_pairs, pair.attribute)
            if not pool:
                continue
            template = rng.choice(STATEMENT_TEMPLATES)
            rows = [(template, pair.identity, 1), (template, rng.choice(pool), 0)]
        for template, who, label in rows:
            texts.append(template.replace("{X}", who).replace("{a}", pair.attribute))
            labels.append(label)
    return texts, np.asarray(labels)


_LABELS = {"1": 1, "0": 0, "true": 1, "false": 0, "biased": 1, "neutral": 0}


def load_labelled(path: Path) -> tuple[list[str], np.ndarray]:
    """A labelled set: JSONL lines ``{"text": ..., "label": 1|0}`` or a CSV with ``text,label`` columns.

    Labels: 1/true/biased for the behaviour to remove, 0/false/neutral for its absence.
    """
    path = Path(path)
    if not path.is_file():
        raise EditorError(f"{path}: labelled data not found; pass a JSONL or CSV file with text and label")
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(fh), start=2)]
    else:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise EditorError(f"{path}:{n}: not JSON ({err.msg}); write one object per line") from None
    texts, labels = [], []
    for n, row in rows:
        if not isinstance(row, dict) or not str(row.get("text") or "").strip() or "label" not in row:
            raise EditorError(f"{path}:{n}: needs a non-empty 'text' and a 'label'")
        label = _LABELS.get(str(row["label"]).strip().lower())
        if label is None:
            raise EditorError(f"{path}:{n}: label {row['label']!r} is not one of 1/0, true/false, biased/neutral")
        texts.append(str(row["text"]))
        labels.append(label)
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=2) if labels else np.zeros(2, dtype=int)
    if counts.min() < 4:
        raise EditorError(f"{path}: needs at least 4 examples of each label (has {counts[1]} biased, {counts[0]} neutral)")
    return texts, np.asarray(labels)


@dataclass
class Activations:
    residual: np.ndarray  # [n, layers, hidden]: mean over tokens of the stream after each block
    after_attention: np.ndarray  # [n, layers, hidden]: the same, after the attention sub-block's add
    labels: np.ndarray  # [n]
    head_means: dict[int, np.ndarray]  # class -> [layers, heads * head_dim], mean input to W_O
    neuron_means: dict[int, np.ndarray]  # class -> [layers, intermediate], mean input to down_proj


@torch.no_grad()
def capture(
    model, info: ModelInfo, tokenizer, texts: list[str], labels: np.ndarray, batch_size: int = 32, progress: bool = False
) -> Activations:
    n_layers = info.num_layers
    residual = np.zeros((len(texts), n_layers, info.hidden_size), dtype=np.float32)
    after_attention = np.zeros_like(residual)
    sums = {c: [np.zeros((n_layers, info.num_heads * info.head_dim)), np.zeros((n_layers, info.intermediate_size))] for c in (0, 1)}
    counts = {0: 0, 1: 0}
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    with _recorded(model, info, range(n_layers), after_attention=True) as store:
        for start in tqdm(range(0, len(texts), batch_size), desc="capture", unit="batch", disable=not progress):
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
                mid = store[f"x{layer}"].float() + store[f"a{layer}"].float()
                after_attention[rows, layer] = (mid * weights).sum(1).cpu().numpy()
                z = (store[f"z{layer}"].float() * weights).sum(1).cpu().numpy()
                m = (store[f"m{layer}"].float() * weights).sum(1).cpu().numpy()
                for c in (0, 1):
                    sums[c][0][layer] += z[cls == c].sum(0)
                    sums[c][1][layer] += m[cls == c].sum(0)
            for c in (0, 1):
                counts[c] += int((cls == c).sum())
    return Activations(
        residual,
        after_attention,
        labels,
        {c: sums[c][0] / max(counts[c], 1) for c in (0, 1)},
        {c: sums[c][1] / max(counts[c], 1) for c in (0, 1)},
    )


@contextmanager
def _recorded(model, info: ModelInfo, residual_layers, after_attention: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks that keep, per forward pass, each head's input to W_O (``z{layer}``) and each neuron's input to
    down_proj (``m{layer}``) at every layer, the stream after the block (``r{layer}``) at ``residual_layers``, and
    with ``after_attention`` the block input (``x{layer}``) and what the attention sub-block adds (``a{layer}``)."""
    arch = info.arch
    residual_layers = set(residual_layers)
    store: dict[str, torch.Tensor] = {}
    handles = []
    for layer in range(info.num_layers):
        block = model.get_submodule(f"{arch.layers}.{layer}")
        if layer in residual_layers:
            handles.append(block.register_forward_hook(lambda _m, _a, o, i=layer: store.__setitem__(f"r{i}", o[0] if isinstance(o, tuple) else o)))
        attn = model.get_submodule(arch.attn.module.format(layer=layer))
        handles.append(attn.register_forward_pre_hook(lambda _m, a, i=layer: store.__setitem__(f"z{i}", a[0])))
        mlp = model.get_submodule(arch.mlp.module.format(layer=layer))
        handles.append(mlp.register_forward_pre_hook(lambda _m, a, i=layer: store.__setitem__(f"m{i}", a[0])))
        if after_attention:
            handles.append(block.register_forward_pre_hook(_block_input(store, layer), with_kwargs=True))
            # What the attention sub-block adds to the stream: its output norm's output where it has one.
            added = model.get_submodule((arch.attn.output_norm or arch.attn.module).format(layer=layer))
            handles.append(added.register_forward_hook(lambda _m, _a, o, i=layer: store.__setitem__(f"a{i}", o)))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _block_input(store: dict, layer: int):
    def keep(_module, args, kwargs):
        store[f"x{layer}"] = args[0] if args else kwargs["hidden_states"]

    return keep


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


def mean_difference(acts: Activations, site: str = "block") -> np.ndarray:
    """[layers, hidden]: mean(biased) - mean(neutral) of the stream after each block (or after its attention add)."""
    stream = acts.residual if site == "block" else acts.after_attention
    biased = stream[acts.labels == 1].mean(0)
    neutral = stream[acts.labels == 0].mean(0)
    return (biased - neutral).astype(np.float32)


def residual_plan(vector: np.ndarray, layer: int, alpha: float) -> list[ResidualAdd]:
    return [ResidualAdd(layer=layer, site="mlp", vector=vector.tolist(), scale=-alpha)]


def ablation_plan(
    vector: np.ndarray, layers: list[int] | None = None, embedding: bool = True, strength: float = 1.0
) -> list[AblateDirection]:
    direction = (vector / np.linalg.norm(vector)).tolist()
    return [AblateDirection(direction=direction, layers=layers, embedding=embedding, strength=strength)]


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
class GenericStats:
    """Second moments of activations on ordinary text (WikiText-2): the yardstick for damage.

    An edit that reads or removes a direction costs roughly the energy ordinary
    text has along it, so directions and input keys are chosen to carry the
    class difference with as little of that energy as possible.
    """

    residual: dict[int, np.ndarray]  # layer -> [hidden, hidden] E[x xᵀ] of the stream after the block
    heads: np.ndarray  # [layers, heads, head_dim, head_dim] E[z zᵀ] of each head's input to W_O
    neurons: np.ndarray  # [layers, intermediate] E[m²] of each neuron's input to down_proj
    tokens: int


@torch.no_grad()
def generic_stats(model, info: ModelInfo, tokens: torch.Tensor, layers: list[int], window: int = 512, skip: int = 4) -> GenericStats:
    """Moments over ``tokens`` in windows; the first ``skip`` positions of a window (attention sinks) are left out."""
    n_layers, heads, d = info.num_layers, info.num_heads, info.head_dim
    residual = {layer: np.zeros((info.hidden_size, info.hidden_size)) for layer in layers}
    head_m = np.zeros((n_layers, heads, d, d))
    neuron_m = np.zeros((n_layers, info.intermediate_size))
    device = next(model.parameters()).device
    count = 0
    with _recorded(model, info, layers) as store:
        for start in range(0, len(tokens) - skip - 1, window):
            ids = tokens[start : start + window]
            model(input_ids=ids.unsqueeze(0).to(device), logits_to_keep=1)
            count += len(ids) - skip
            for layer in range(n_layers):
                if layer in residual:
                    x = store[f"r{layer}"][0, skip:].double().cpu()
                    residual[layer] += (x.T @ x).numpy()
                z = store[f"z{layer}"][0, skip:].double().cpu().reshape(-1, heads, d)
                head_m[layer] += torch.einsum("thi,thj->hij", z, z).numpy()
                neuron_m[layer] += (store[f"m{layer}"][0, skip:].double().cpu() ** 2).sum(0).numpy()
    count = max(count, 1)
    return GenericStats({k: v / count for k, v in residual.items()}, head_m / count, neuron_m / count, count)


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


KEY_SOURCES = ("contrast", "biased_mean")


@dataclass
class Component:
    layer: int
    kind: str  # "head" or "neuron"
    index: int
    k: np.ndarray  # input key, scaled so ordinary text gives E[(k·z)²] = 1
    selectivity: float  # k · (mean input on biased - on neutral)


def components(
    acts: Activations, info: ModelInfo, up_to_layer: int, stats: GenericStats, keys: str = "contrast", shrink: float = 0.1
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
            out.append(Component(layer, "neuron", int(j), np.array([scale[j]], dtype=np.float32), float(diff[j] * scale[j])))
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
            edits.append(RankOne(layer=comp.layer, site="attn", head=comp.index, u=u, v=comp.k.tolist(), scale=float(weight)))
        else:
            edits.append(RankOne(layer=comp.layer, site="mlp", neuron=comp.index, u=u, v=comp.k.tolist(), scale=float(weight)))
    return edits
