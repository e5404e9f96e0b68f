"""The edit x architecture matrix, computed by compiling one probe edit per cell (one source of truth: the bake).

Each cell compiles a small edit of that kind for a synthetic checkpoint of
that architecture (tensor names from the architecture table, tiny shapes,
no weights): a refusal is the bake's own refusal message; a success that
changes config.json is "exact via" that change; anything else is exact.

The llama.cpp column takes each probe the bake accepts and asks the llama.cpp
rules (``editor.core.gguf_rules``) whether the converted checkpoint would load
there: the same verdict ``wedit gguf`` gives an export before converting it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from editor.core.architectures import ARCHITECTURES, ArchSpec, get_arch
from editor.core.gguf_rules import CONFIG_RULES, llama_cpp_verdict
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
    "scale_experts",
)
LLAMA_CPP = "llama.cpp"
_HIDDEN, _HEADS, _INTER, _VOCAB, _EXPERTS = 8, 2, 16, 16, 2


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
    experts = arch.experts
    if experts:
        config.update({experts.count_keys[0]: _EXPERTS, experts.width_key: _INTER})
        if experts.shared_width_key:
            config[experts.shared_width_key] = _INTER
    if arch.text_config:  # a wrapper keeps the language model's sizes in their own section
        text = {k: v for k, v in config.items() if k not in ("model_type", arch.tie_key)}
        text["model_type"] = arch.text_model_types[0]
        config = {"model_type": arch.model_type, arch.tie_key: True, arch.text_config: text}
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
    if experts:  # the probe's one layer is an MoE layer
        for expert in range(_EXPERTS):
            add(experts.down.replace("{expert}", str(expert)), (_HIDDEN, _INTER))
        if experts.shared:
            add(experts.shared, (_HIDDEN, _INTER))
    for name in arch.embeddings:
        add(name, (_VOCAB, _HIDDEN))
    for name in (arch.final_norm, *arch.pre_norms):
        add(name, (_HIDDEN,))
    return ModelInfo(config, tensors, where=f"(probe {arch.model_type} checkpoint)")


def _probe_edits(column: str, info: ModelInfo) -> list[Any]:
    from editor.edits import AblateDirection, MeanHeads, RankOne, ResidualAdd, ScaleExperts, ScaleHeads, ZeroHeads

    unit = [1.0] + [0.0] * (info.hidden_size - 1)
    probes: dict[str, Callable[[], list[Any]]] = {
        "zero_heads": lambda: [ZeroHeads(layer=0, heads=[0])],
        "mean_heads": lambda: [MeanHeads(layer=0, heads=[0], means=[[1.0] * info.head_dim])],
        "scale_heads": lambda: [ScaleHeads(layer=0, heads=[0], scale=0.5)],
        "residual_add attn": lambda: [ResidualAdd(layer=0, site="attn", vector=unit)],
        "residual_add mlp": lambda: [ResidualAdd(layer=0, site="mlp", vector=unit)],
        "ablate_direction": lambda: [AblateDirection(direction=unit, strength=1.0)],
        "rank_one": lambda: [RankOne(layer=0, site="attn", head=0, u=unit, v=[1.0] * info.head_dim)],
        "scale_experts": lambda: [ScaleExperts(layer=0, experts=[0], scale=0.5)],
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
    if arch.experts and column in ("ablate_direction", "scale_experts"):
        shared = " and the shared expert's" if arch.experts.shared else ""
        return Capability("exact", f"every expert's down projection{shared}" if column == "ablate_direction" else "")
    return Capability("exact")


@dataclass(frozen=True)
class Serving:
    """The llama.cpp column: which of the edits the bake accepts convert to GGUF and load in llama.cpp."""

    status: Literal["all", "some", "none"]
    gguf_arch: str
    refused: tuple[tuple[str, str], ...] = ()  # (column, reason)
    needs: tuple[str, ...] = ()  # config.json values the graph assumes (gguf_rules.CONFIG_RULES)

    def render(self) -> str:
        needs = f", when {' and '.join(self.needs)}" if self.needs else ""
        if self.status == "all":
            return f"every exact edit loads (GGUF arch {self.gguf_arch}{needs})"
        reasons = "; ".join(f"{column}: {reason}" for column, reason in self.refused)
        head = "no edit loads" if self.status == "none" else "the other edits load"
        return f"{head} (GGUF arch {self.gguf_arch}{needs}); refused: {reasons}"


def llama_cpp_serving(arch: ArchSpec) -> Serving:
    """Compile every column's probe; ask the llama.cpp rules about each one the bake accepts."""
    from editor.core.bake import compile_plan

    archs: list[str] = []
    refused: list[tuple[str, str]] = []
    accepted = 0
    for column in COLUMNS:
        info = probe_info(arch)
        try:
            program = compile_plan(_probe_edits(column, info), info)
        except EditorError:
            continue  # the bake refuses it: nothing to convert
        accepted += 1
        architecture = program.config_updates.get("architectures", [arch.causal_lm_class])[0]
        untied = info.stored_name(f"{arch.lm_head}.weight")
        head = untied if untied in program.new_tensors else None
        verdict = llama_cpp_verdict(
            architecture, [*info.tensors, *program.new_tensors], info.num_layers, whole=False, lm_head=head
        )
        archs += [verdict.gguf_arch or architecture]
        if not verdict.serves:
            refused.append((column, verdict.reason))
    status: Literal["all", "some", "none"] = "all" if not refused else "none" if len(refused) == accepted else "some"
    needs = tuple(
        f"{rule.key} is {str(rule.value).lower()}"
        for gguf in dict.fromkeys(archs)
        for rule in CONFIG_RULES.get(gguf, ())
    )
    return Serving(status, " / ".join(dict.fromkeys(archs)), tuple(refused), needs)


def matrix() -> dict[str, dict[str, Capability | Serving]]:
    rows: dict[str, dict[str, Capability | Serving]] = {}
    for mt, spec in sorted(ARCHITECTURES.items()):
        rows[mt] = {col: capability(spec, col) for col in COLUMNS}
        rows[mt][LLAMA_CPP] = llama_cpp_serving(spec)
    return rows


def matrix_markdown() -> str:
    columns = (*COLUMNS, LLAMA_CPP)
    lines = ["| model_type | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for mt, row in matrix().items():
        lines.append(f"| {mt} | " + " | ".join(row[c].render() for c in columns) + " |")
    return "\n".join(lines)
