"""Which heads carry nationality stereotypes in general: direct logit attribution on the build fold.

BiasScope (``editor.methods.attribute``) scores heads on questions about one target country and one
answer. A search over every SeeGULL stereotype needs one ranking for all of them: for a stereotyped
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
from editor.methods.attribute.head_scores import attribute_batch

TEMPLATE = "{X} people are"


def _left_padded(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    bos = (
        [tokenizer.bos_token_id]
        if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False)
        else []
    )
    rows = [bos + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


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
        ids, mask = _left_padded(tokenizer, prompts)
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
