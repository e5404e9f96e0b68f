"""The edit x architecture matrix, computed by compiling one probe edit per cell (one source of truth: the bake).

Each cell compiles a small edit of that kind for a synthetic checkpoint of
that architecture (tensor names from the architecture table, tiny shapes,
no weights): a refusal is the bake's own refusal message; a success that
changes config.json is "exact via" that change; anything else is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from editor.core.architectures import ARCHITECTURES, ArchSpec, get_arch
from editor.core.model_info import ModelInfo, TensorMeta
from editor.errors import EditorError

Status = Literal["exact", "via", "refused"]
COLUMNS = (
    "zero_heads",
    "mean_heads",
    "scale_heads",
    "residual_add attn",
    "residual_add mlp",
    "ablate_direction",
    "rank_one",
)
_HIDDEN, _HEADS, _INTER, _VOCAB = 8, 2, 16, 16


@dataclass(frozen=True)
class Capability:
    status: Status
    detail: str = ""

    def render(self) -> str:
        if self.status == "exact":
            return "exact" + (f" ({self.detail})" if self.detail else "")
        if self.status == "via":
            return f"exact via {self.detail}"
        return f"refused: {self.detail}"


def probe_info(arch: ArchSpec) -> ModelInfo:
    """A one-layer checkpoint of ``arch`` described by metadata only: every tensor an edit may touch or need."""
    config: dict[str, Any] = {
        "model_type": arch.model_type,
        arch.hidden_key: _HIDDEN,
        arch.layers_key: 1,
        arch.heads_key: _HEADS,
        arch.intermediate_key: _INTER,
        arch.tie_key: True,  # a tied model shows what ablation must do to the readout
        "vocab_size": _VOCAB,
    }
    if arch.kv_heads_key:
        config[arch.kv_heads_key] = _HEADS
    if arch.head_dim_key:
        config[arch.head_dim_key] = _HIDDEN // _HEADS
    tensors: dict[str, TensorMeta] = {}

    def add(module: str, shape: tuple[int, ...], param: str = "weight") -> None:
        tensors.setdefault(f"{module.format(layer=0)}.{param}", TensorMeta(shape, "F32"))

    targets = [arch] + ([get_arch(arch.redeclare.model_type)] if arch.redeclare else [])
    for spec in targets:
        for writer in spec.writers:
            inner = _HIDDEN if writer.site == "attn" else _INTER
            add(writer.module, (_HIDDEN, inner) if writer.orientation == "out_in" else (inner, _HIDDEN))
            if writer.bias.mode == "always":
                add(writer.module, (_HIDDEN,), "bias")
            for sibling in writer.bias.siblings:
                add(sibling, (_HIDDEN, _HIDDEN))
    for name in arch.embeddings:
        add(name, (_VOCAB, _HIDDEN))
    for name in (arch.final_norm, *arch.pre_norms):
        add(name, (_HIDDEN,))
    return ModelInfo(config, tensors, where=f"(probe {arch.model_type} checkpoint)")


def _probe_edits(column: str, info: ModelInfo) -> list[Any]:
    from editor.edits import AblateDirection, MeanHeads, RankOne, ResidualAdd, ScaleHeads, ZeroHeads

    unit = [1.0] + [0.0] * (info.hidden_size - 1)
    probes: dict[str, Callable[[], list[Any]]] = {
        "zero_heads": lambda: [ZeroHeads(layer=0, heads=[0])],
        "mean_heads": lambda: [MeanHeads(layer=0, heads=[0], means=[[1.0] * info.head_dim])],
        "scale_heads": lambda: [ScaleHeads(layer=0, heads=[0], scale=0.5)],
        "residual_add attn": lambda: [ResidualAdd(layer=0, site="attn", vector=unit)],
        "residual_add mlp": lambda: [ResidualAdd(layer=0, site="mlp", vector=unit)],
        "ablate_direction": lambda: [AblateDirection(direction=unit, strength=1.0)],
        "rank_one": lambda: [RankOne(layer=0, site="attn", head=0, u=unit, v=[1.0] * info.head_dim)],
    }
    return probes[column]()


def capability(arch: ArchSpec, column: str) -> Capability:
    """Compile the column's probe edit for ``arch`` and say what the bake did."""
    from editor.core.bake import compile_plan

    info = probe_info(arch)
    try:
        program = compile_plan(_probe_edits(column, info), info)
    except EditorError as err:  # RefusedEdit, or a check the edit makes of the architecture
        # The probe has one layer: "model.layers.0.x" names every layer's x.
        return Capability("refused", str(err).removeprefix(f"{arch.model_type}: ").replace(".0.", ".N."))
    updates = dict(program.config_updates)
    if "model_type" in updates:
        turned_on = " + ".join(k for k, v in updates.items() if v is True)
        unset = " and ".join(arch.redeclare.requires_unset) if arch.redeclare else ""
        return Capability("via", f"re-declaring as {updates['model_type']} + {turned_on} (needs {unset} null/false)")
    keys = [k for k, v in updates.items() if v is True]
    if keys:
        return Capability("via", "config key " + " + ".join(keys))
    if updates.get(arch.tie_key) is False:
        return Capability("exact", "unties a tied lm_head")
    if column.startswith("residual_add") or column == "mean_heads":
        return Capability("exact", "existing bias")
    return Capability("exact")


def matrix() -> dict[str, dict[str, Capability]]:
    return {mt: {col: capability(spec, col) for col in COLUMNS} for mt, spec in sorted(ARCHITECTURES.items())}


def matrix_markdown() -> str:
    lines = ["| model_type | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for mt, row in matrix().items():
        lines.append(f"| {mt} | " + " | ".join(row[c].render() for c in COLUMNS) + " |")
    return "\n".join(lines)
