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

from editor.core.model_info import ModelInfo
from editor.errors import EditorError
from editor.io.checkpoint import Checkpoint
from editor.io.manifest import MANIFEST, read_manifest
from editor.io.progress import progress as tqdm_progress
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
    expert: str | None = None  # "expert 3" or "the shared expert": whose down projection this is, in an MoE layer
    expert_scale: float | None = None  # B's weight is A's times this number (0: the expert was removed)
    all_zero: bool | None = None
    explained_by: list[str] = field(default_factory=list)
    non_finite: str | None = None  # why there is no norm or rank: NaN/Inf counts, or a float32 overflow

    def summary(self) -> str:
        if self.status == "added":
            kind = "bias " if self.name.endswith(".bias") else ""
            if self.non_finite:
                return f"added {kind}{self.name} {self.shape} ({self.non_finite})"
            zeros = " (all zeros)" if self.all_zero else f" (norm {self.delta_norm:.4g})"
            return f"added {kind}{self.name} {self.shape}{zeros}"
        if self.status == "removed":
            return f"removed {self.name} {self.shape}"
        if self.status == "reshaped":
            return f"reshaped {self.name} -> {self.shape}"
        if self.non_finite:
            return f"changed {self.name} {self.shape}: {self.non_finite}, no norm or rank"
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
        if self.expert_scale is not None:
            effect = "removed (zeroed)" if self.expert_scale == 0 else f"scaled by {self.expert_scale:.3g}"
            parts.append(f"{self.expert} of layer {self.layer} {effect}")
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
    # "NAME: count in A, count in B" for every tensor holding NaN/Inf on either side, changed or not
    non_finite: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.tensors and not self.config

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"identical": self.identical}, indent=2)

    def render(self) -> str:
        lines = [f"A: {self.a}", f"B: {self.b}"]
        if self.identical:
            lines.append(f"no differences: {self.unchanged} tensors and config.json identical")
            lines += [f"  ! holds NaN/Inf (count in A, in B): {line}" for line in self.non_finite]
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
        if self.non_finite:
            lines.append("tensors holding NaN/Inf (count in A, in B):")
            lines += [f"  ! {line}" for line in self.non_finite]
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
            if writer.site == "mlp" and info.is_moe_layer(layer):
                for expert in info.expert_list(layer):
                    name = "the shared expert" if expert == "shared" else f"expert {expert}"
                    out[info.expert_weight(layer, expert)] = (layer, name)
            elif info.has_tensor(writer.module.format(layer=layer)):
                out[info.writer_weight(writer, layer)] = (layer, writer.site)
    return out


def _scale_of(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """The number f with B = f A, when there is one (up to B's storage rounding), else None."""
    fa, fb = a.double().flatten(), b.double().flatten()
    norm = float(fa.norm())
    if norm == 0.0:
        return None
    factor = float(fa @ fb) / norm**2
    # bf16 rounds each value by at most 2^-9 of itself; a scale leaves no other change behind
    return round(factor, 4) if float((fb - factor * fa).norm()) <= 4e-3 * norm else None


def _info(ckpt: Checkpoint) -> ModelInfo | None:
    try:
        return ckpt.info()
    except EditorError:
        return None  # an unknown architecture still diffs tensor by tensor


def _non_finite(tensor: torch.Tensor) -> int:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    values = tensor if tensor.is_complex() else tensor.float()
    return int((~torch.isfinite(values)).sum())


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as stored: NaN equals NaN with the same bits, 0.0 differs from -0.0."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _changed(name: str, ta: torch.Tensor, tb: torch.Tensor, dtype: str) -> TensorDiff:
    """How one tensor changed: norm and rank of the difference (nothing more when either side holds NaN/Inf)."""
    fa, fb = ta.float(), tb.float()
    delta = fb - fa
    entry = TensorDiff(name, "changed", list(tb.shape))
    if not bool(torch.isfinite(delta).all()):
        bad_a, bad_b = _non_finite(ta), _non_finite(tb)
        entry.non_finite = (
            f"holds NaN/Inf (A {bad_a}, B {bad_b})" if bad_a or bad_b else "the difference overflows float32"
        )
        return entry
    entry.delta_norm = float(delta.norm())
    try:
        estimate = numerical_rank(delta, fa, dtype)
        entry.rank, entry.rank_at_least = estimate.rank, estimate.at_least
    except RuntimeError:  # an SVD that does not converge: the norm still says the tensor changed
        pass
    return entry


def diff_checkpoints(a_dir: Path, b_dir: Path, progress: bool = True) -> DiffReport:
    a, b = Checkpoint.open(a_dir), Checkpoint.open(b_dir)
    manifest = read_manifest(b_dir) if (Path(b_dir) / MANIFEST).is_file() else None  # a broken one: before any work
    info = _info(b) or _info(a)
    writers = _writer_index(info)
    read_a, read_b = _Reader(a), _Reader(b)
    diffs: list[TensorDiff] = []
    non_finite: list[str] = []
    unchanged = 0

    for name in sorted(set(b.metas) - set(a.metas)):
        tensor = read_b.get(name)
        bad = _non_finite(tensor)
        values = tensor.float()
        entry = TensorDiff(name, "added", list(tensor.shape), all_zero=not bool(values.any()))
        if bad:
            entry.non_finite = f"holds {bad} NaN/Inf"
            non_finite.append(f"{name}: -, {bad}")
        else:
            entry.delta_norm = float(values.norm())
        diffs.append(entry)
    for name in sorted(set(a.metas) - set(b.metas)):
        diffs.append(TensorDiff(name, "removed", list(a.metas[name].shape)))
        bad = _non_finite(read_a.get(name))
        if bad:
            non_finite.append(f"{name}: {bad}, -")
    common = sorted(set(a.metas) & set(b.metas))
    with tqdm_progress(common, show=progress, desc="diff", unit="tensor") as bar:
        for name in bar:
            ta, tb = read_a.get(name), read_b.get(name)
            bad_a, bad_b = _non_finite(ta), _non_finite(tb)
            if bad_a or bad_b:
                non_finite.append(f"{name}: {bad_a}, {bad_b}")
            if a.metas[name].shape != b.metas[name].shape:
                diffs.append(TensorDiff(name, "reshaped", list(b.metas[name].shape)))
                continue
            if _same_bits(ta, tb):
                unchanged += 1
                continue
            entry = _changed(name, ta, tb, b.metas[name].dtype)
            if name in writers and entry.non_finite is None:
                entry.layer, site = writers[name]
                if site.endswith("expert") or site.startswith("expert "):
                    entry.expert, entry.expert_scale = site, _scale_of(ta, tb)
                elif site == "attn" and info is not None:
                    changes = head_changes(ta.float(), tb.float(), info, b.metas[name].dtype)
                    entry.zeroed_heads, entry.scaled_heads = changes.zeroed, changes.scaled
                    entry.only_zeroed_heads = changes.only_heads
            elif name in writers:
                entry.layer = writers[name][0]
            diffs.append(entry)

    config = {
        key: [a.config.get(key), b.config.get(key)]
        for key in sorted(set(a.config) | set(b.config))
        if key not in _IGNORED_CONFIG_KEYS and a.config.get(key) != b.config.get(key)
    }
    heads = _head_summary(diffs, info, read_a, read_b) + _expert_summary(diffs)
    unexplained, edits = _explain(manifest, diffs)
    return DiffReport(str(a_dir), str(b_dir), diffs, unchanged, config, heads, unexplained, edits, non_finite)


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
        if bias in by_name and by_name[bias].status in ("added", "changed") and by_name[bias].non_finite is None:
            after = read_b.get(bias)
            before = read_a.get(bias) if by_name[bias].status == "changed" else torch.zeros_like(after)
            dtype = read_b.ckpt.metas[bias].dtype
            d.mean_ablated_heads = mean_ablated(read_a.get(d.name), d.zeroed_heads, before, after, info, dtype)
        lines += head_lines(d.layer, HeadChanges(d.zeroed_heads, d.scaled_heads), d.mean_ablated_heads)
    return lines


def _expert_summary(diffs: list[TensorDiff]) -> list[str]:
    """One line per MoE layer and factor: the experts whose down projections were only scaled (or zeroed)."""
    groups: dict[tuple[int, float], list[str]] = {}
    for d in diffs:
        if d.expert_scale is not None and d.layer is not None:
            groups.setdefault((d.layer, d.expert_scale), []).append(d.expert or "")
    lines = []
    for (layer, factor), names in sorted(groups.items()):
        effect = "removed (zeroed)" if factor == 0 else f"scaled by {factor:.3g}"
        lines.append(f"layer {layer}: {', '.join(names)} {effect}")
    return lines


def _explain(manifest: dict[str, Any] | None, diffs: list[TensorDiff]) -> tuple[list[str], list[str]]:
    if manifest is None:
        return [], []
    labels: dict[str, list[str]] = {}
    for key in ("changed_tensors", "added_tensors"):
        entries = manifest.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                edits = entry.get("edits")
                labels[entry["name"]] = [str(e) for e in edits] if isinstance(edits, list) else []
    unexplained = []
    for diff in diffs:
        diff.explained_by = labels.get(diff.name, [])
        if not diff.explained_by:
            unexplained.append(diff.name)
    described = manifest.get("edits_described")
    return unexplained, [str(e) for e in described] if isinstance(described, list) else []


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
