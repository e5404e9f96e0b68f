"""Multiple-choice scoring: log P(option | prompt) for every option of every prompt, each prompt run once into a
key-value cache that its options share (the world yardstick's ambiguous questions, and its contexts, whose
completions are the options)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from editor.engines.placement import input_device
from editor.evaluation.batches import left_padded, right_padded
from editor.evaluation.metrics import bos_ids, pad_id


def read_left_padded(model, rows: Sequence[list[int]], pad: int, *, use_cache: bool = False, logits_to_keep: int = 0):
    """The model's output on token ``rows`` left-padded into one batch, so that every row's last token is at the
    last position (what comes next after each prompt), and the attention mask. ``logits_to_keep``: how many final
    positions are projected onto the vocabulary (0: all)."""
    ids, mask = left_padded(rows, pad)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row's positions count from its first real token
    device = input_device(model)
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=use_cache,
        logits_to_keep=logits_to_keep,
    )
    return out, mask


@torch.no_grad()
def choice_logprobs(
    model, tokenizer, prompts: Sequence[str], options: Sequence[Sequence[str]], batch_size: int = 16
) -> np.ndarray:
    """[prompts, options]: log P(option | prompt) for every option of every prompt, the prompt read once.

    A multiple-choice item's prompt is long and its options short: the prompts of a batch are left-padded and run
    once into a key-value cache, which is repeated for each option, and only the options' tokens run again.
    Every prompt has the same number of options. Prompts are batched in order of length (a stable sort, so the
    same inputs always make the same batches), so a batch pads little.
    """
    bos = bos_ids(tokenizer)
    pad = pad_id(tokenizer)
    k = len(options[0])
    out = np.zeros((len(prompts), k))
    device = input_device(model)
    prompt_ids = [bos + tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        heads = [prompt_ids[i] for i in chunk]
        # only the last position's logits: the vocabulary projection of every other is waste
        first, head_mask = read_left_padded(model, heads, pad, use_cache=True, logits_to_keep=1)
        cache = first.past_key_values
        cache.batch_repeat_interleave(k)
        last = torch.log_softmax(first.logits[:, -1].float(), -1).repeat_interleave(k, 0)
        tails = [tokenizer(option, add_special_tokens=False)["input_ids"] for i in chunk for option in options[i]]
        tail_ids, tail_mask = right_padded(tails, pad)
        mask = torch.cat([head_mask.repeat_interleave(k, 0), tail_mask], 1)
        tail_positions = head_mask.sum(-1, keepdim=True).repeat_interleave(k, 0) + torch.arange(tail_ids.shape[1])
        logits = model(
            input_ids=tail_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=tail_positions.to(device),
            past_key_values=cache,
        ).logits
        logp = torch.log_softmax(logits.float(), -1).cpu()
        last = last.cpu()
        for row, tail in enumerate(tails):
            total = float(last[row, tail[0]]) + sum(float(logp[row, j - 1, tail[j]]) for j in range(1, len(tail)))
            out[chunk[row // k], row % k] = total
    return out
