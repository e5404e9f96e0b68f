"""The edit x architecture matrix, derived from the architecture table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from editor.architectures import ARCHITECTURES, ArchSpec, Writer, get_arch

Status = Literal["exact", "via", "refused"]
COLUMNS = ("zero_heads", "residual_add attn", "residual_add mlp", "ablate_direction", "rank_one")


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


def _residual_add(arch: ArchSpec, writer: Writer) -> Capability:
    if writer.output_norm:
        return Capability("refused", f"{writer.output_norm.rsplit('.', 1)[-1]} normalises the block output")
    rule = writer.bias
    if rule.mode == "always":
        return Capability("exact", "existing bias")
    if rule.mode == "config_key":
        return Capability("via", f"config key {rule.key}")
    if arch.redeclare:
        target = get_arch(arch.redeclare.model_type).writer(writer.site).bias
        unset = " and ".join(arch.redeclare.requires_unset)
        return Capability("via", f"re-declaring as {arch.redeclare.model_type} + {target.key} (needs {unset} null/false)")
    return Capability("refused", "no bias can exist on " + writer.module.rsplit(".", 1)[-1])


def capability(arch: ArchSpec, column: str) -> Capability:
    if column in ("zero_heads", "rank_one"):
        return Capability("exact")
    if column == "residual_add attn":
        return _residual_add(arch, arch.attn)
    if column == "residual_add mlp":
        return _residual_add(arch, arch.mlp)
    if column == "ablate_direction":
        if arch.has_output_norm:
            return Capability("refused", "block outputs are renormalised")
        return Capability("exact", "unties a tied lm_head")
    raise KeyError(column)


def matrix() -> dict[str, dict[str, Capability]]:
    return {mt: {col: capability(spec, col) for col in COLUMNS} for mt, spec in sorted(ARCHITECTURES.items())}


def matrix_markdown() -> str:
    lines = ["| model_type | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for mt, row in matrix().items():
        lines.append(f"| {mt} | " + " | ".join(row[c].render() for c in COLUMNS) + " |")
    return "\n".join(lines)
