"""Head rankings, in one place: the robust top k over seeds (BiasScope), and the stereotype ranking of every
SeeGULL pair (the search), both read off direct logit attribution (``head_scores``).

BiasScope (``pipeline``) scores heads on questions about one target country and one answer, once per seed,
and keeps the heads in the top k of every seed (``robust_heads``). A search over every SeeGULL stereotype needs
one ranking for all of them (``association_head_scores``): for a stereotyped
pair (X, a) and a group Y nobody linked to a, a head's score is its direct effect on the first token of
" a" after "X people are" minus the same after "Y people are" (both against the logit of " the", which
only sets the readout's origin and cancels between the two). Heads that raise the attribute whoever is
named cancel; heads that raise it for the stereotyped group score high.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from editor.core.model_info import ModelInfo
from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold, unlinked_in_fold
from editor.evaluation.batches import left_padded
from editor.evaluation.metrics import bos_ids, pad_id
from editor.methods.attribute.head_scores import attribute_batch

TEMPLATE = "{X} people are"


def association_head_scores(
    model,
    info: ModelInfo,
    tokenizer,
    all_pairs: list[StereotypePair],
    fold: SplitFold,
    count: int,
    *,
    seed: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """[layers, heads]: mean contrastive direct effect over ``count`` of the fold's stereotyped pairs."""
    rng = random.Random(seed)
    pairs = rng.sample(list(fold.pairs), min(count, len(fold.pairs)))
    rows = []
    for pair in pairs:
        others = unlinked_in_fold(all_pairs, fold, pair.attribute)
        if others:
            rows.append((pair.identity, rng.choice(others), pair.attribute))
    origin = tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    total = np.zeros((info.num_layers, info.num_heads))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [TEMPLATE.replace("{X}", x) for x, _, _ in chunk] + [TEMPLATE.replace("{X}", y) for _, y, _ in chunk]
        targets = [tokenizer(" " + a, add_special_tokens=False)["input_ids"][0] for _, _, a in chunk] * 2
        bos = bos_ids(tokenizer)
        rows = [bos + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        ids, mask = left_padded(rows, pad_id(tokenizer))
        result = attribute_batch(
            model, info, ids, mask, torch.tensor(targets), torch.full((len(prompts),), origin, dtype=torch.long)
        )
        n = len(chunk)
        total += (result.heads[:n] - result.heads[n:]).sum(0)
    return total / max(len(rows), 1)


def top_heads(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` highest-scoring heads with a positive score, strongest first."""
    order = np.argsort(scores, axis=None)[::-1]
    out = []
    for flat in order[:k]:
        layer, head = np.unravel_index(flat, scores.shape)
        if scores[layer, head] <= 0:
            break
        out.append((int(layer), int(head)))
    return out


def robust_heads(seed_scores: list[np.ndarray], k: int) -> list[tuple[int, int]]:
    """Heads in the top k (positive scores only) of every seed, strongest first by mean score."""
    chosen = None
    for scores in seed_scores:
        flat = scores.reshape(-1)
        order = np.argsort(-flat)[:k]
        top = {int(i) for i in order if flat[i] > 0}
        chosen = top if chosen is None else chosen & top
    mean = np.mean(seed_scores, axis=0).reshape(-1)
    heads = seed_scores[0].shape[1]
    return [(i // heads, i % heads) for i in sorted(chosen or set(), key=lambda i: -mean[i])]
