"""The shapes config.json implies for every tensor the architecture table names, checked before any planning.

A W_O half as wide as config.json says would be planned against columns that do not exist and exported as
a checkpoint nothing can load. So the writers (W_O, down_proj) and their biases, the norms around them,
the embeddings and the LM head must each have the shape the config implies, and a mismatch is one line
naming the tensor and both shapes. Tensors the table does not name (q/k/v, gate/up) are left to the loader.
"""

from __future__ import annotations

from collections.abc import Iterator

from editor.core.model_info import ModelInfo
from editor.errors import EditorError

Shape = tuple[int | None, ...]  # None: any size (a position table's length is not the architecture's business)


def _vocab(info: ModelInfo) -> int | None:
    value = info.text_config.get("vocab_size")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _norm(module: str, hidden: int) -> Iterator[tuple[str, str, Shape, bool]]:
    yield module, "weight", (hidden,), True
    yield module, "bias", (hidden,), False


def expected_shapes(info: ModelInfo) -> Iterator[tuple[str, str, Shape, bool]]:
    """(module, parameter, shape, required) for each tensor the architecture table names."""
    arch, hidden, vocab = info.arch, info.hidden_size, _vocab(info)
    for layer in range(info.num_layers):
        for writer in arch.writers:
            if writer.site == "mlp" and info.is_moe_layer(layer):
                for expert in info.expert_list(layer):  # one down projection per expert (the shared one's own width)
                    module = info.expert_weight(layer, expert).removesuffix(".weight")
                    yield module, "weight", (hidden, info.expert_width(expert)), True
                continue
            module = writer.module.format(layer=layer)
            inner = info.writer_in_features(writer, layer)
            yield module, "weight", (hidden, inner) if writer.orientation == "out_in" else (inner, hidden), True
            yield module, "bias", (hidden,), False
            if writer.output_norm:
                yield from _norm(writer.output_norm.format(layer=layer), hidden)
        for norm in arch.pre_norms:
            yield from _norm(norm.format(layer=layer), hidden)
    yield from _norm(arch.final_norm, hidden)
    token, *others = arch.embeddings
    yield token, "weight", (vocab, hidden), True
    for table in others:  # GPT-2's position embeddings: as many rows as positions
        yield table, "weight", (None, hidden), True
    yield arch.lm_head, "weight", (vocab, hidden), not info.tied


def _fits(found: tuple[int, ...], expected: Shape) -> bool:
    return len(found) == len(expected) and all(e is None or f == e for f, e in zip(found, expected))


def _show(shape: Shape) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"


def check_shapes(info: ModelInfo) -> None:
    """Raise at the first named tensor that is missing or whose shape config.json does not imply."""
    for module, param, expected, required in expected_shapes(info):
        if not required and not info.has_tensor(module, param):
            continue
        name = info.tensor_name(module, param)  # a missing required tensor is an error naming it
        found = info.tensors[name].shape
        if not _fits(found, expected):
            raise EditorError(
                f"{info.where}: tensor {name} has shape {_show(found)}, but config.json implies {_show(expected)}; "
                "the weights and the config disagree (re-download the checkpoint or fix config.json)"
            )
