"""Batches of token rows: padded on either side, split by length where padding would cost more than a second
forward pass, and read at chosen positions only (what every likelihood scorer and fit objective runs on)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from editor.engines.placement import input_device


def right_padded(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of ``rows``, padded on the right with ``pad`` to the longest."""
    ids = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def left_padded(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of ``rows``, padded on the left with ``pad``, so every row ends at the last position."""
    ids = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, ids.shape[1] - len(row) :] = torch.tensor(row)
        mask[i, ids.shape[1] - len(row) :] = 1
    return ids, mask


# A batch is split in two by length where that saves at least this share of its padded positions: a fit's batch
# mixes short statements with long sentences, and every padded position costs a whole forward (and backward) pass.
SPLIT_SAVING = 0.15


def length_buckets(lengths: Sequence[int]) -> list[list[int]]:
    """The rows (indices, in order) to run together: all of them, or the short and the long ones apart where the
    split saves ``SPLIT_SAVING`` of the padded positions. Deterministic: the same lengths give the same buckets."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    whole = len(sizes) * sizes[-1] if sizes else 0
    best, cut = whole, 0
    for k in range(1, len(sizes)):
        padded = k * sizes[k - 1] + (len(sizes) - k) * sizes[-1]
        if padded < best:
            best, cut = padded, k
    if not cut or best > (1 - SPLIT_SAVING) * whole:
        return [list(range(len(lengths)))]
    return [sorted(order[:cut]), sorted(order[cut:])]


def span_logits(model, rows: Sequence[list[int]], spans: Sequence[tuple[int, int]], pad: int) -> torch.Tensor:
    """The logits at positions ``a .. b-1`` of each row (row by row, in order): [sum of span lengths, vocabulary].
    Keeps the autograd graph, so a fit can train through it.

    Rows run right-padded, in one batch or two by length (``length_buckets``). Only the positions of the spans reach
    the vocabulary projection, picked out in one indexing step: a softmax over every padded position, or a slice
    per row, made a fit's backward pass materialise the whole (rows x positions x vocabulary) tensor.
    """
    device = input_device(model)
    buckets = length_buckets([len(r) for r in rows])
    parts: dict[int, torch.Tensor] = {}
    for bucket in buckets:
        ids, mask = right_padded([rows[i] for i in bucket], pad)
        first = min(spans[i][0] for i in bucket)
        last = max(spans[i][1] for i in bucket)
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=torch.arange(first, last)
        ).logits
        row_of = torch.tensor([n for n, i in enumerate(bucket) for _ in range(*spans[i])], device=device)
        position = torch.tensor([t - first for i in bucket for t in range(*spans[i])], device=device)
        picked = logits[row_of, position]
        if len(buckets) == 1:
            return picked
        for i, block in zip(bucket, picked.split([b - a for a, b in (spans[i] for i in bucket)])):
            parts[i] = block
    return torch.cat([parts[i] for i in range(len(rows))])
