"""Mixture-of-experts layers at run time: what one routed expert computes and how much of it the router keeps.

transformers 5 holds a layer's routed experts as one fused module (``gate_up_proj`` [E, 2W, H], ``down_proj``
[E, H, W], ``act_fn``) whose forward takes the tokens, the experts the router picked for each token and their
weights. A hook that edits one expert's down projection needs that expert's input (what its down projection
reads) and the weight its output is scaled by, both recomputed here from what the fused module was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def expert_input(experts: torch.nn.Module, hidden: torch.Tensor, expert: int) -> torch.Tensor:
    """What expert ``expert``'s down projection reads for every token in ``hidden`` [tokens, hidden]:
    ``act(gate x) * up x``, computed as the fused module computes it for the tokens routed to it."""
    import torch.nn.functional as F

    weight: torch.Tensor = experts.gate_up_proj  # type: ignore[assignment]
    gate, up = F.linear(hidden, weight[expert]).chunk(2, dim=-1)
    return experts.act_fn(gate) * up  # type: ignore[operator]


def routing_weight(top_k_index: torch.Tensor, top_k_weights: torch.Tensor, expert: int) -> torch.Tensor:
    """The weight each token's router gave ``expert`` (0 where it was not picked), [tokens]."""
    return (top_k_weights * (top_k_index == expert)).sum(-1)


def fused_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, top_k_index, top_k_weights) as the sparse block passed them to the fused experts module."""
    names = ("hidden_states", "top_k_index", "top_k_weights")
    values = list(args) + [kwargs[n] for n in names[len(args) :]]
    return values[0], values[1], values[2]
