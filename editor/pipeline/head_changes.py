"""Recognise head edits in a checkpoint diff: W_O columns zeroed or scaled, and mean-ablation's bias constant.

A zeroed head has all-zero W_O input columns in B; a scaled head has columns
that are one factor times A's (within B's rounding). A mean-ablated head is a
zeroed head whose layer's attention output bias changed by a vector inside the
span of that head's original columns (``W_O[:, head] · mean``). When the
zeroed heads of a layer span the whole hidden space, every bias change lies in
their span and the two cannot be told apart from tensors alone; those heads
are then reported as zeroed and the bias change as a tensor change (the
manifest names the edit behind it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from editor.core.model_info import ModelInfo

EPS = {"BF16": 2.0**-8, "F16": 2.0**-11, "F32": 2.0**-24, "F64": 2.0**-53}


@dataclass
class HeadChanges:
    zeroed: list[int] = field(default_factory=list)
    scaled: list[tuple[int, float]] = field(default_factory=list)
    only_heads: bool = False  # nothing else in the tensor changed


def _block(w: torch.Tensor, info: ModelInfo, head: int) -> torch.Tensor:
    """Head ``head``'s W_O columns as [hidden, head_dim], whatever the storage orientation."""
    sl = slice(head * info.head_dim, (head + 1) * info.head_dim)
    return w[:, sl] if info.arch.attn.orientation == "out_in" else w[sl, :].T


def head_changes(a: torch.Tensor, b: torch.Tensor, info: ModelInfo, dtype: str) -> HeadChanges:
    """Which heads' W_O columns B zeroed or scaled by one factor, and whether that is all that changed."""
    eps = EPS.get(dtype, 2.0**-24)
    out = HeadChanges()
    rest_a, rest_b = a.clone(), b.clone()
    for head in range(info.num_heads):
        block_a, block_b = _block(a, info, head), _block(b, info, head)
        if not block_a.any() or torch.equal(block_a, block_b):
            continue
        if not block_b.any():
            out.zeroed.append(head)
        else:
            factor = float((block_a * block_b).sum() / (block_a * block_a).sum())
            # Rounding factor * a to B's dtype moves each entry by at most eps/2 of its size.
            if float((block_b - factor * block_a).abs().max()) > eps * float(block_a.abs().max()):
                continue
            out.scaled.append((head, factor))
        _block(rest_a, info, head).zero_()
        _block(rest_b, info, head).zero_()
    out.only_heads = bool(torch.equal(rest_a, rest_b))
    return out


def mean_ablated(
    w_a: torch.Tensor, zeroed: list[int], bias_a: torch.Tensor, bias_b: torch.Tensor, info: ModelInfo, dtype: str
) -> list[int]:
    """The zeroed heads whose original output directions carry the layer's bias change (their mean constant)."""
    delta = bias_b.float() - bias_a.float()
    size = float(delta.norm())
    if not zeroed or size == 0.0:
        return []
    columns = torch.cat([_block(w_a.float(), info, h) for h in zeroed], dim=1)  # [hidden, heads * head_dim]
    if int(torch.linalg.matrix_rank(columns)) >= columns.shape[0]:
        return []  # the heads span everything: any bias change would fit
    coeffs = torch.linalg.lstsq(columns, delta.unsqueeze(1)).solution[:, 0]
    residual = float((columns @ coeffs - delta).norm())
    noise = EPS.get(dtype, 2.0**-24) * (float(bias_a.float().norm()) + float(bias_b.float().norm()))
    if residual > 1e-4 * size + noise:
        return []
    d = info.head_dim
    parts = [float((_block(w_a.float(), info, h) @ coeffs[i * d : (i + 1) * d]).norm()) for i, h in enumerate(zeroed)]
    return [h for h, part in zip(zeroed, parts) if part > 1e-3 * size]


def head_lines(layer: int, changes: HeadChanges, mean: list[int]) -> list[str]:
    """'layer 23: head 4 mean-ablated', 'layer 27: heads 0, 1 scaled by 0.5', 'layer 3: heads 0, 5 zeroed'."""

    def heads(hs: list[int]) -> str:
        return f"head{'s' if len(hs) > 1 else ''} {', '.join(map(str, hs))}"

    lines = []
    zeroed = [h for h in changes.zeroed if h not in mean]
    if zeroed:
        lines.append(f"layer {layer}: {heads(zeroed)} zeroed")
    if mean:
        lines.append(f"layer {layer}: {heads(mean)} mean-ablated")
    by_factor: dict[str, list[int]] = {}
    for head, factor in changes.scaled:
        by_factor.setdefault(f"{factor:.3g}", []).append(head)
    lines += [f"layer {layer}: {heads(hs)} scaled by {factor}" for factor, hs in by_factor.items()]
    return lines
