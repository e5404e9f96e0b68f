"""Direct logit attribution of every attention head, in one batched forward pass.

For a prompt whose next token is the answer, head ``h`` of layer ``i`` writes
``r_h = W_O[:, slice_h] z_h`` into the residual stream at the last position.
Its direct effect on the answer is ``Δ_h = (W_U[y_b] - W_U[y_u]) · N(r_h)``,
where ``N`` is the final norm with its scale frozen at the value it has on
that position (the usual choice: the norm divides by the RMS, or standard
deviation, of the whole final residual; holding that divisor fixed makes the
readout linear, so contributions add up). LayerNorm also centres each
contribution. Architectures that normalise a block's output before the
residual add (Gemma-2/3, OLMo-2) get the same treatment for that norm, frozen
at the block output.

Everything is captured by hooks during one ordinary forward pass: the input
of every W_O (the concatenated head outputs), every writer's output, the
embeddings and the final residual. No head is re-run. Completeness holds by
construction and is tested: embeddings + heads + output biases + MLPs (+ the
final LayerNorm's bias) sum to the model's logit difference.

In a mixture-of-experts layer the MLP's write is split the same way: expert
``e`` writes ``w_e W_e h_e`` at the last position (its router weight times its
down projection of its own input, recomputed from what the fused experts
module received), and the shared expert writes the rest. Experts the router
did not pick at that position score 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from editor.core.model_info import ModelInfo
from editor.edits.experts import expert_input, fused_args, routing_weight
from editor.engines.placement import execution_device, input_device, weight_of


@dataclass
class BatchAttribution:
    heads: np.ndarray  # [batch, layers, heads]
    attn_bias: np.ndarray  # [batch, layers]: W_O bias (and its share of an output norm)
    mlp: np.ndarray  # [batch, layers]
    embeddings: np.ndarray  # [batch]
    constant: np.ndarray  # [batch]: the final LayerNorm's bias
    total: np.ndarray  # [batch]: d · final_norm(x), the logit difference before any soft-capping
    # Mixture-of-experts models: each routed expert's share of ``mlp`` [batch, layers, experts] and the shared
    # expert's [batch, layers] (zeros in dense layers); None for a dense model.
    experts: np.ndarray | None = None
    shared_expert: np.ndarray | None = None

    def component_sum(self) -> np.ndarray:
        return self.heads.sum((1, 2)) + self.attn_bias.sum(1) + self.mlp.sum(1) + self.embeddings + self.constant


def _norm_gain(norm: torch.nn.Module, size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(effective gain, additive bias or None, centres?) of a LayerNorm or any RMS-style norm."""
    if isinstance(norm, torch.nn.LayerNorm):
        bias = weight_of(norm, "bias")
        return weight_of(norm).float(), None if bias is None else bias.float(), True  # type: ignore[union-attr]
    # RMS variants differ in how they store the gain (Gemma uses 1 + w); read it off the module:
    # on a vector of ones the RMS is sqrt(1 + eps), so norm(ones) * sqrt(1 + eps) is the gain.
    with torch.no_grad():
        out = norm(torch.ones(1, size, device=device, dtype=dtype)).float()[0]
    return out * (1.0 + _eps(norm)) ** 0.5, None, False


def _eps(norm: torch.nn.Module) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _scale(x: torch.Tensor, centred: bool, eps: float) -> torch.Tensor:
    """The divisor the norm applies at this position: std (LayerNorm) or RMS."""
    if centred:
        return torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class _Capture:
    """Hooks that keep last-position activations during one forward pass."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo) -> None:
        self.model, self.info = model, info
        self.z: dict[int, torch.Tensor] = {}
        self.attn_out: dict[int, torch.Tensor] = {}
        self.mlp_out: dict[int, torch.Tensor] = {}
        self.emb: list[torch.Tensor] = []
        self.final: torch.Tensor | None = None
        self.routed: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # MoE: last-position inputs
        self.handles = []

    def __enter__(self) -> _Capture:
        arch, m = self.info.arch, self.model
        for layer in range(self.info.num_layers):
            attn = m.get_submodule(arch.attn.module.format(layer=layer))
            mlp = m.get_submodule(self.info.write_module(arch.mlp, layer))
            if self.info.is_moe_layer(layer) and arch.experts is not None:
                fused = m.get_submodule(arch.experts.fused.format(layer=layer))
                self.handles.append(fused.register_forward_pre_hook(self._routing(layer, mlp), with_kwargs=True))
            self.handles.append(
                attn.register_forward_pre_hook(lambda _m, a, i=layer: self.z.__setitem__(i, a[0][:, -1].float()))
            )
            self.handles.append(
                attn.register_forward_hook(lambda _m, _a, o, i=layer: self.attn_out.__setitem__(i, o[:, -1].float()))
            )
            self.handles.append(
                mlp.register_forward_hook(lambda _m, _a, o, i=layer: self.mlp_out.__setitem__(i, o[:, -1].float()))
            )
        for emb in arch.embeddings:
            self.handles.append(
                m.get_submodule(emb).register_forward_hook(lambda _m, _a, o: self.emb.append(o[:, -1].float()))
            )
        final = m.get_submodule(arch.final_norm)
        self.handles.append(final.register_forward_pre_hook(lambda _m, a: setattr(self, "final", a[0][:, -1].float())))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def _routing(self, layer: int, block: torch.nn.Module):
        """Keep the fused experts' inputs at each row's last position (the block flattened [batch, seq] tokens)."""
        shape: dict[str, int] = {}
        self.handles.append(block.register_forward_pre_hook(lambda _m, a: shape.__setitem__("seq", a[0].shape[1])))

        def keep(_module, args, kwargs):
            hidden, index, weights = fused_args(args, kwargs)
            last = torch.arange(shape["seq"] - 1, len(hidden), shape["seq"], device=hidden.device)
            self.routed[layer] = (hidden[last], index[last], weights[last])

        return keep


@torch.no_grad()
def expert_writes(model: torch.nn.Module, info: ModelInfo, layer: int, routed) -> torch.Tensor:
    """[batch, experts, hidden]: what each routed expert wrote at the last position (0 where it was not picked)."""
    assert info.arch.experts is not None
    fused = model.get_submodule(info.arch.experts.fused.format(layer=layer))
    hidden, index, weights = routed
    writes = []
    for expert in range(info.num_experts):
        down = torch.nn.functional.linear(expert_input(fused, hidden, expert), fused.down_proj[expert])
        writes.append(routing_weight(index, weights, expert)[:, None].to(down.dtype) * down)
    return torch.stack(writes, 1).float()


def _writer_weight(
    model: torch.nn.Module, info: ModelInfo, site: str, layer: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    writer = info.arch.writer(site)
    module = model.get_submodule(writer.module.format(layer=layer))
    weight = weight_of(module).float()  # type: ignore[union-attr]
    if writer.orientation == "in_out":  # GPT-2 Conv1D stores [in, out]
        weight = weight.T
    bias = weight_of(module, "bias")
    return weight, None if bias is None else bias.float()


@torch.no_grad()
def attribute_batch(
    model: torch.nn.Module,
    info: ModelInfo,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    biased_ids: torch.Tensor,
    unbiased_ids: torch.Tensor,
) -> BatchAttribution:
    """Direct effects at the last position of a left-padded batch on logit[y_b] - logit[y_u]."""
    device = input_device(model)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with _Capture(model, info) as cap:
        # Only the hooks' captures are needed; logits_to_keep=1 skips the vocabulary projection of every other position.
        model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            logits_to_keep=1,
        )
    arch = info.arch
    unembed = weight_of(model.get_output_embeddings())
    d = (unembed[biased_ids.to(unembed.device)] - unembed[unbiased_ids.to(unembed.device)]).float().cpu()  # [B, hidden]

    final = model.get_submodule(arch.final_norm)
    x = cap.final.cpu()
    gain, norm_bias, centred = _norm_gain(
        final, info.hidden_size, execution_device(final), next(final.parameters()).dtype
    )
    gain = gain.cpu()
    divisor = _scale(x, centred, _eps(final))
    readout = d * gain / divisor  # d' such that Δ(c) = centre(c) · d'
    if centred:
        readout = readout - readout.mean(-1, keepdim=True)
    constant = (d * norm_bias.cpu()).sum(-1) if norm_bias is not None else torch.zeros(len(d))
    normed = (x - x.mean(-1, keepdim=True) if centred else x) / divisor * gain
    total = (d * normed).sum(-1) + constant

    n_heads, head_dim = info.num_heads, info.head_dim
    heads = torch.zeros(len(d), info.num_layers, n_heads)
    attn_bias = torch.zeros(len(d), info.num_layers)
    mlp = torch.zeros(len(d), info.num_layers)
    moe = info.arch.experts is not None
    experts = torch.zeros(len(d), info.num_layers, max(info.num_experts, 1))
    shared = torch.zeros(len(d), info.num_layers)
    for layer in range(info.num_layers):
        for site, out in (("attn", cap.attn_out[layer].cpu()), ("mlp", cap.mlp_out[layer].cpu())):
            writer = arch.writer(site)
            read = readout
            if writer.output_norm:  # the block output is normalised before the residual add: freeze it too
                post = model.get_submodule(writer.output_norm.format(layer=layer))
                post_gain, _, post_centred = _norm_gain(
                    post, info.hidden_size, execution_device(post), next(post.parameters()).dtype
                )
                read = readout * post_gain.cpu() / _scale(out, post_centred, _eps(post))
            if site == "mlp":
                mlp[:, layer] = (out * read).sum(-1)
                if layer in cap.routed:
                    writes = expert_writes(model, info, layer, cap.routed[layer]).cpu()
                    experts[:, layer] = (writes * read[:, None]).sum(-1)
                    shared[:, layer] = mlp[:, layer] - experts[:, layer].sum(-1)  # zero without a shared expert
                continue
            weight, bias = _writer_weight(model, info, "attn", layer)
            projected = read @ weight.cpu()  # [B, heads * head_dim]: each head's readout direction
            z = cap.z[layer].cpu()
            heads[:, layer] = (projected * z).view(len(d), n_heads, head_dim).sum(-1)
            if bias is not None:
                attn_bias[:, layer] = (bias.cpu() * read).sum(-1)
    embeddings = sum((e.cpu() * readout).sum(-1) for e in cap.emb)
    return BatchAttribution(
        heads.numpy(),
        attn_bias.numpy(),
        mlp.numpy(),
        np.asarray(embeddings),
        constant.numpy(),
        total.numpy(),
        experts.numpy() if moe else None,
        shared.numpy() if moe else None,
    )
