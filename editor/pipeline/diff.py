"""Explain how two checkpoints differ: which tensors, which heads, what rank, and which edit did it.

Tensors are read one pair at a time, so memory stays at two tensors however
large the models are. With an ``editor_manifest.json`` beside B, every change
is matched to the edit that made it and anything no edit explains is flagged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from editor.core.model_info import ModelInfo
from editor.errors import EditorError
from editor.io.checkpoint import Checkpoint
from editor.pipeline.head_changes import EPS, HeadChanges, head_changes, head_lines, mean_ablated

_EPS = EPS
_IGNORED_CONFIG_KEYS = {"transformers_version", "_name_or_path"}


@dataclass
class TensorDiff:
    name: str
    status: str  # added | removed | changed | reshaped
    shape: list[int]
    delta_norm: float | None = None
    rank: int | None = None
    rank_at_least: bool = False  # more than RANK_CAP directions: ``rank`` is a lower bound
    layer: int | None = None
    zeroed_heads: list[int] = field(default_factory=list)
    scaled_heads: list[tuple[int, float]] = field(default_factory=list)
    mean_ablated_heads: list[int] = field(default_factory=list)  # among zeroed_heads: their mean went into the bias
    only_zeroed_heads: bool = False  # nothing changed but the listed heads' columns (zeroed or scaled)
    all_zero: bool | None = None
    explained_by: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.status == "added":
            kind = "bias " if self.name.endswith(".bias") else ""
            zeros = " (all zeros)" if self.all_zero else f" (norm {self.delta_norm:.4g})"
            return f"added {kind}{self.name} {self.shape}{zeros}"
        if self.status == "removed":
            return f"removed {self.name} {self.shape}"
        if self.status == "reshaped":
            return f"reshaped {self.name} -> {self.shape}"
        parts = [f"changed {self.name} {self.shape}: |Δ| {self.delta_norm:.4g}"]
        if self.rank is not None:
            if self.rank_at_least:
                parts.append(f"rank > {self.rank}")
            else:
                parts.append(f"rank {self.rank}" + (" (rank-1 update)" if self.rank == 1 else ""))
        heads = []
        if self.zeroed_heads:
            heads.append(f"heads {', '.join(map(str, self.zeroed_heads))} zeroed")
        if self.scaled_heads:
            heads.append(", ".join(f"head {h} scaled by {f:.3g}" for h, f in self.scaled_heads))
        if heads:
            parts.append(" and ".join(heads) + ("" if self.only_zeroed_heads else " plus other changes"))
        return "; ".join(parts)


@dataclass
class DiffReport:
    a: str
    b: str
    tensors: list[TensorDiff]
    unchanged: int
    config: dict[str, list[Any]]
    head_summary: list[str]
    unexplained: list[str]
    manifest_edits: list[str]

    @property
    def identical(self) -> bool:
        return not self.tensors and not self.config

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"identical": self.identical}, indent=2)

    def render(self) -> str:
        lines = [f"A: {self.a}", f"B: {self.b}"]
        if self.identical:
            lines.append(f"no differences: {self.unchanged} tensors and config.json identical")
            return "\n".join(lines)
        lines.append(f"{len(self.tensors)} tensors differ, {self.unchanged} identical")
        lines += [f"  {line}" for line in self.head_summary]
        zero_adds: dict[tuple[str, ...], list[str]] = {}
        for diff in self.tensors:
            if diff.status == "added" and diff.all_zero:
                # Sibling biases a config key demands: dozens of identical lines say less than one.
                zero_adds.setdefault(tuple(diff.explained_by), []).append(diff.name)
                continue
            why = f"  <- {'; '.join(diff.explained_by)}" if diff.explained_by else ""
            lines.append(f"  {diff.summary()}{why}")
        for edits, names in zero_adds.items():
            because = f"  <- {'; '.join(edits)}" if edits else ""
            lines.append(f"  added {len(names)} all-zero tensors ({_name_pattern(names)}){because}")
        for key, (old, new) in sorted(self.config.items()):
            lines.append(f"  config {key}: {old!r} -> {new!r}")
        if self.manifest_edits:
            lines.append("edits recorded in B's manifest:")
            lines += [f"  - {edit}" for edit in self.manifest_edits]
            if self.unexplained:
                lines.append("NOT explained by any recorded edit:")
                lines += [f"  ! {name}" for name in self.unexplained]
            else:
                lines.append("every change is explained by a recorded edit")
        return "\n".join(lines)


class _Reader:
    """Keeps one safetensors handle per shard open while diffing."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self.handles: dict[str, Any] = {}

    def get(self, name: str) -> torch.Tensor:
        file = self.ckpt.weight_map[name]
        if file not in self.handles:
            self.handles[file] = safe_open(self.ckpt.path / file, framework="pt")
        return self.handles[file].get_tensor(name)


# Above this many singular values an exact SVD is slow on a CPU (a 4096 x 14336 down_proj takes
# over a minute on two cores, and an 8B ablation changes 65 such matrices); the rank is then estimated.
EXACT_RANK_MAX_SIDE = 1024
RANK_CAP = 64
_OVERSAMPLE = 16


@dataclass(frozen=True)
class RankEstimate:
    rank: int
    at_least: bool  # True: the change has more than RANK_CAP directions above the noise; ``rank`` is a lower bound


def numerical_rank(delta: torch.Tensor, reference: torch.Tensor, dtype: str) -> RankEstimate:
    """Rank of ``delta`` above the rounding noise of storing ``reference`` in ``dtype``."""
    if delta.ndim != 2:
        return RankEstimate(int(bool(delta.abs().max() > 0)) if delta.numel() else 0, False)
    m, n = delta.shape
    # Rounding each entry moves it by at most eps/2 * |entry|; a matrix of such noise has
    # spectral norm below eps * max|entry| * (sqrt(m) + sqrt(n)) / 2. Count singular values above twice that.
    floor = _EPS.get(dtype, 2.0**-24) * float(reference.abs().max()) * (m**0.5 + n**0.5)
    if min(m, n) <= EXACT_RANK_MAX_SIDE:
        values = torch.linalg.svdvals(delta)
        return RankEstimate(_count_above(values, floor), False)
    values = _top_singular_values(delta, RANK_CAP + _OVERSAMPLE)
    count = _count_above(values, floor)
    # Singular values of Q^T delta never exceed delta's own, so the count is a lower bound; below the cap
    # (with the oversampling margin) the range finder holds the whole change and the count is its rank.
    return RankEstimate(min(count, RANK_CAP), at_least=count > RANK_CAP)


def _count_above(values: torch.Tensor, floor: float) -> int:
    return int((values > max(floor, float(values[0]) * 1e-6)).sum()) if values.numel() else 0


def _top_singular_values(matrix: torch.Tensor, k: int, power_iterations: int = 2) -> torch.Tensor:
    """Randomized range finder (Halko, Martinsson & Tropp 2011, alg. 4.4): the top k singular values."""
    generator = torch.Generator().manual_seed(0)
    sketch = torch.randn(matrix.shape[1], k, generator=generator, dtype=matrix.dtype)
    basis, _ = torch.linalg.qr(matrix @ sketch)
    for _ in range(power_iterations):
        back, _ = torch.linalg.qr(matrix.T @ basis)
        basis, _ = torch.linalg.qr(matrix @ back)
    return torch.linalg.svdvals(basis.T @ matrix)


def _writer_index(info: ModelInfo | None) -> dict[str, tuple[int, str]]:
    if info is None:
        return {}
    out: dict[str, tuple[int, str]] = {}
    for layer in range(info.num_layers):
        for writer in info.arch.writers:
            if info.has_tensor(writer.module.format(layer=layer)):
                out[info.writer_weight(writer, layer)] = (layer, writer.site)
    return out


def _info(ckpt: Checkpoint) -> ModelInfo | None:
    try:
        return ckpt.info()
    except EditorError:
        return None  # an unknown architecture still diffs tensor by tensor


def diff_checkpoints(a_dir: Path, b_dir: Path, progress: bool = True) -> DiffReport:
    a, b = Checkpoint.open(a_dir), Checkpoint.open(b_dir)
    info = _info(b) or _info(a)
    writers = _writer_index(info)
    read_a, read_b = _Reader(a), _Reader(b)
    diffs: list[TensorDiff] = []
    unchanged = 0

    for name in sorted(set(b.metas) - set(a.metas)):
        tensor = read_b.get(name).float()
        diffs.append(
            TensorDiff(name, "added", list(tensor.shape), float(tensor.norm()), all_zero=not bool(tensor.any()))
        )
    for name in sorted(set(a.metas) - set(b.metas)):
        diffs.append(TensorDiff(name, "removed", list(a.metas[name].shape)))
    common = sorted(set(a.metas) & set(b.metas))
    for name in tqdm(common, desc="diff", unit="tensor", disable=not progress):
        if a.metas[name].shape != b.metas[name].shape:
            diffs.append(TensorDiff(name, "reshaped", list(b.metas[name].shape)))
            continue
        ta, tb = read_a.get(name), read_b.get(name)
        if ta.dtype == tb.dtype and torch.equal(ta, tb):
            unchanged += 1
            continue
        fa, fb = ta.float(), tb.float()
        delta = fb - fa
        entry = TensorDiff(name, "changed", list(tb.shape), float(delta.norm()))
        estimate = numerical_rank(delta, fa, b.metas[name].dtype)
        entry.rank, entry.rank_at_least = estimate.rank, estimate.at_least
        if name in writers:
            entry.layer, site = writers[name]
            if site == "attn" and info is not None:
                changes = head_changes(fa, fb, info, b.metas[name].dtype)
                entry.zeroed_heads, entry.scaled_heads = changes.zeroed, changes.scaled
                entry.only_zeroed_heads = changes.only_heads
        diffs.append(entry)

    config = {
        key: [a.config.get(key), b.config.get(key)]
        for key in sorted(set(a.config) | set(b.config))
        if key not in _IGNORED_CONFIG_KEYS and a.config.get(key) != b.config.get(key)
    }
    heads = _head_summary(diffs, info, read_a, read_b)
    unexplained, edits = _explain(b_dir, diffs)
    return DiffReport(str(a_dir), str(b_dir), diffs, unchanged, config, heads, unexplained, edits)


def _head_summary(diffs: list[TensorDiff], info: ModelInfo | None, read_a: _Reader, read_b: _Reader) -> list[str]:
    """One line per layer and kind of head edit; a zeroed head whose mean went into the bias is mean-ablated."""
    if info is None:
        return []
    by_name = {d.name: d for d in diffs}
    lines = []
    for d in sorted(diffs, key=lambda d: d.layer if d.layer is not None else -1):
        if not (d.zeroed_heads or d.scaled_heads) or d.layer is None:
            continue
        bias = info.tensor_name(info.arch.attn.module.format(layer=d.layer), "bias", must_exist=False)
        if bias in by_name and by_name[bias].status in ("added", "changed"):
            after = read_b.get(bias)
            before = read_a.get(bias) if by_name[bias].status == "changed" else torch.zeros_like(after)
            dtype = read_b.ckpt.metas[bias].dtype
            d.mean_ablated_heads = mean_ablated(read_a.get(d.name), d.zeroed_heads, before, after, info, dtype)
        lines += head_lines(d.layer, HeadChanges(d.zeroed_heads, d.scaled_heads), d.mean_ablated_heads)
    return lines


def _explain(b_dir: Path, diffs: list[TensorDiff]) -> tuple[list[str], list[str]]:
    manifest_path = Path(b_dir) / "editor_manifest.json"
    if not manifest_path.is_file():
        return [], []
    manifest = json.loads(manifest_path.read_text())
    labels: dict[str, list[str]] = {}
    for entry in manifest.get("changed_tensors", []) + manifest.get("added_tensors", []):
        labels[entry["name"]] = entry.get("edits", [])
    unexplained = []
    for diff in diffs:
        diff.explained_by = labels.get(diff.name, [])
        if not diff.explained_by:
            unexplained.append(diff.name)
    return unexplained, manifest.get("edits_described", [])


def _name_pattern(names: list[str]) -> str:
    """'model.layers.{0..29}.mlp.up_proj.bias, ...' for a list of per-layer names."""
    import re

    groups: dict[str, list[int]] = {}
    loose = []
    for name in names:
        match = re.search(r"\.(\d+)\.", name)
        if match:
            key = name[: match.start(1)] + "{}" + name[match.end(1) :]
            groups.setdefault(key, []).append(int(match.group(1)))
        else:
            loose.append(name)
    parts = [key.format("{" + _runs(sorted(v)) + "}" if len(v) > 1 else v[0]) for key, v in groups.items()]
    return ", ".join(parts + loose)


def _runs(values: list[int]) -> str:
    """[0, 1, 2, 4, 5] -> '0..2,4..5'."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ",".join(f"{a}..{b}" if a != b else str(a) for a, b in runs)
