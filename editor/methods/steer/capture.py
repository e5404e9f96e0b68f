"""Activations captured with hooks: class means of the stream, head and neuron inputs, and ordinary-text moments.

Capture: the residual stream after every block (and after its attention add), mean-pooled over real
tokens, plus every head's input to W_O and every MLP neuron's input to down_proj, averaged per class.
The moments of the same activations on ordinary text (WikiText-2) are the yardstick for damage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.core.model_info import ModelInfo
from editor.engines.placement import input_device


@dataclass
class Activations:
    residual: np.ndarray  # [n, layers, hidden]: mean over tokens of the stream after each block
    after_attention: np.ndarray  # [n, layers, hidden]: the same, after the attention sub-block's add
    labels: np.ndarray  # [n]
    head_means: dict[int, np.ndarray]  # class -> [layers, heads * head_dim], mean input to W_O
    neuron_means: dict[int, np.ndarray]  # class -> [layers, intermediate], mean input to down_proj


@torch.no_grad()
def capture(
    model,
    info: ModelInfo,
    tokenizer,
    texts: list[str],
    labels: np.ndarray,
    batch_size: int = 32,
    progress: bool = False,
) -> Activations:
    n_layers = info.num_layers
    residual = np.zeros((len(texts), n_layers, info.hidden_size), dtype=np.float32)
    after_attention = np.zeros_like(residual)
    sums = {
        c: [np.zeros((n_layers, info.num_heads * info.head_dim)), np.zeros((n_layers, info.intermediate_size))]
        for c in (0, 1)
    }
    counts = {0: 0, 1: 0}
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    device = input_device(model)
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
                for c in (0, 1):
                    sums[c][0][layer] += z[cls == c].sum(0)
                if f"m{layer}" in store:  # a dense MLP's neurons (an MoE layer's stay zero: see _recorded)
                    m = (store[f"m{layer}"].float() * weights).sum(1).cpu().numpy()
                    for c in (0, 1):
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
def _recorded(
    model, info: ModelInfo, residual_layers, after_attention: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
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
            handles.append(
                block.register_forward_hook(
                    lambda _m, _a, o, i=layer: store.__setitem__(f"r{i}", o[0] if isinstance(o, tuple) else o)
                )
            )
        attn = model.get_submodule(arch.attn.module.format(layer=layer))
        handles.append(attn.register_forward_pre_hook(lambda _m, a, i=layer: store.__setitem__(f"z{i}", a[0])))
        if not info.is_moe_layer(layer):
            # An MoE layer has no one down projection whose inputs are "the neurons": its experts' neurons are
            # each read by a few tokens only, so neuron statistics (and Steer2Edit's neuron edits) skip it.
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
def generic_stats(
    model, info: ModelInfo, tokens: torch.Tensor, layers: list[int], window: int = 512, skip: int = 4
) -> GenericStats:
    """Moments over ``tokens`` in windows; the first ``skip`` positions of a window (attention sinks) are left out."""
    n_layers, heads, d = info.num_layers, info.num_heads, info.head_dim
    residual = {layer: np.zeros((info.hidden_size, info.hidden_size)) for layer in layers}
    head_m = np.zeros((n_layers, heads, d, d))
    neuron_m = np.zeros((n_layers, info.intermediate_size))
    device = input_device(model)
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
                if f"m{layer}" in store:
                    neuron_m[layer] += (store[f"m{layer}"][0, skip:].double().cpu() ** 2).sum(0).numpy()
    count = max(count, 1)
    return GenericStats({k: v / count for k, v in residual.items()}, head_m / count, neuron_m / count, count)
