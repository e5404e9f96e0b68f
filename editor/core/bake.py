"""Compile a list of edits into per-tensor operations, and apply them.

A ``BakeProgram`` says, for every tensor a plan touches, which functions to
apply (in fp32) and which new tensors (zero biases, an untied lm_head) to
create, plus the config.json keys to change. It is computed from tensor
*metadata* only, so the exporter can stream a checkpoint tensor by tensor and
load just the tensors listed here. An op may read other tensors (a
mean-ablated head's bias term reads its W_O columns): the exporter and the
verifier hand the program a reader of the source (``read_source``) before
applying it.

Ordering matters when edits touch the same tensor. At run time the hooks see
a writer's input after every input-side edit (head masks) and then modify its
output in plan order, so the baked weight is ``(output-side ops in plan order)``
followed by ``(input-side masks)``. ``stage`` encodes that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from editor.core.architectures import Writer, get_arch
from editor.core.model_info import ModelInfo
from editor.errors import EditorError, RefusedEdit
from editor.io.tensor_file import STORAGE, from_float32, to_float32

if TYPE_CHECKING:
    from editor.edits.base import Edit

OUTPUT_SIDE = 0
INPUT_SIDE = 1

TensorFn = Callable[[np.ndarray, int], np.ndarray]
"""An operation on float32 rows ``[first, first + len(values))`` of a tensor (a writable array; ``first`` is 0
when the op sees the whole tensor); returns the new rows."""
RowReader = Callable[[str, int, int], np.ndarray]
"""``(source tensor, start, stop)``: the stored values of rows ``[start, stop)`` of that tensor."""

# Edited tensors are computed in blocks of rows of about this many float32 bytes: a 128k-token embedding
# never exists in float32 all at once, and each block's decode, maths and encode stay in the CPU's cache.
BLOCK_BYTES = 1 << 20


def rows_per_block(shape: tuple[int, ...]) -> int:
    """Rows per block of a tensor of ``shape``: a multiple of 8, so BLAS's row kernels and its thread split of a
    block fall on the same rows whatever the tensor's size (export and verify use the same blocks, so they
    compute the same values)."""
    if len(shape) < 2:
        return max(1, shape[0] if shape else 1)
    row_bytes = 4 * int(np.prod(shape[1:]))
    return max(8, BLOCK_BYTES // row_bytes // 8 * 8)


@contextmanager
def serial_blas() -> Iterator[None]:
    """BLAS on one thread while tensors are edited: blocks are small, so BLAS's own threads would spin more than
    they work (beside the exporter's copy thread), and the values then do not depend on the machine's core count
    (a matrix-vector product's thread split decides which rows take BLAS's tail kernel)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def block_rows(lo: int, hi: int, first: int, count: int) -> tuple[slice, slice] | None:
    """Where rows ``[lo, hi)`` of a tensor meet the block of ``count`` rows starting at ``first``: the slice in
    the block and the slice relative to ``lo``; None when they do not meet."""
    start, stop = max(lo, first), min(hi, first + count)
    if start >= stop:
        return None
    return slice(start - first, stop - first), slice(start - lo, stop - lo)


@dataclass
class TensorOp:
    stage: int
    order: int
    fn: Callable[..., np.ndarray]
    label: str
    # Other tensors the op reads, passed to ``fn`` after the tensor and its first row as float32 values with
    # their own output-side ops applied (what a writer computes before any input-side head mask). Such an op
    # sees the whole tensor.
    reads: tuple[str, ...] = ()
    # True when each row's result depends only on that row (and its index): the op then runs block by block and
    # the tensor is never whole in float32. False (a projection that sums over rows): it sees the whole tensor.
    rowwise: bool = False


@dataclass(frozen=True)
class NewTensor:
    shape: tuple[int, ...]
    dtype: str
    # None: starts as zeros; otherwise a copy of that source tensor as stored (before any edit)
    copy_of: str | None = None
    reason: str = ""


@dataclass
class BakeProgram:
    info: ModelInfo
    ops: dict[str, list[TensorOp]] = field(default_factory=dict)
    new_tensors: dict[str, NewTensor] = field(default_factory=dict)
    config_updates: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Vocabulary edits (add_token): tokens the exported tokenizer gains, tensors whose row count changes,
    # and row operations an lm_head untied from a tied embedding must repeat so it still reads out new tokens.
    added_tokens: list[tuple[str, int]] = field(default_factory=list)
    resized: dict[str, tuple[int, ...]] = field(default_factory=dict)
    tied_row_ops: list[tuple[TensorFn, str]] = field(default_factory=list)  # row-wise ops
    # Input-side head edits (zero, scale, mean) per (layer, head): (sequence, factor on the head's W_O input) in
    # plan order. A mean-ablation's constant is multiplied by the factors of the head edits after it.
    head_inputs: dict[tuple[int, int], list[tuple[int, float]]] = field(default_factory=dict)
    # Reads a source tensor's stored values; set by whoever applies the program (export, verify).
    read_source: Callable[[str], np.ndarray] | None = None
    _counter: int = 0

    # ---- building -------------------------------------------------------------
    def add_op(
        self,
        name: str,
        stage: int,
        fn: Callable[..., np.ndarray],
        label: str,
        reads: tuple[str, ...] = (),
        *,
        rowwise: bool = False,
    ) -> None:
        for tensor in (name, *reads):
            if tensor not in self.info.tensors and tensor not in self.new_tensors:
                raise KeyError(f"internal: op on unknown tensor {tensor}")
        self._counter += 1
        self.ops.setdefault(name, []).append(
            TensorOp(stage, self._counter, fn, label, tuple(reads), rowwise and not reads)
        )

    def note_head_input(self, layer: int, heads: Iterable[int], factor: float) -> int:
        """Record that an input-side edit multiplies these heads' W_O input by ``factor``; return its sequence."""
        sequence = sum(len(v) for v in self.head_inputs.values())
        for head in heads:
            self.head_inputs.setdefault((layer, head), []).append((sequence, factor))
        return sequence

    def factor_after(self, layer: int, head: int, sequence: int) -> float:
        """Product of the input factors that head edits later than ``sequence`` apply to this head."""
        product = 1.0
        for seq, factor in self.head_inputs.get((layer, head), []):
            if seq > sequence:
                product *= factor
        return product

    def bias_name(self, writer: Writer, layer: int) -> str | None:
        """The writer's bias tensor if it exists or the plan creates it, else None."""
        if writer.site == "mlp" and self.info.is_moe_layer(layer):
            return None  # experts have no bias (the mlp site's rule says why)
        module = writer.module.format(layer=layer)
        if self.info.has_tensor(module, "bias"):
            return self.info.tensor_name(module, "bias")
        name = self.info.tensor_name(module, "bias", must_exist=False)
        return name if name in self.new_tensors else None

    def require_bias(self, writer: Writer, layer: int, *, before_output_norm: bool = False) -> str:
        """Make sure ``writer`` has a bias that adds straight into the residual stream; return its name.

        ``before_output_norm``: the constant belongs in the writer's own output, ahead of any norm applied to it
        (a mean-ablated head's term: the hooks change what enters W_O), so an output norm does not stop it.
        """
        info = self.info
        arch = info.arch
        if writer.output_norm and not before_output_norm:
            raise RefusedEdit(
                f"{arch.model_type}: {writer.output_norm.format(layer=layer)} normalises the {writer.site} output "
                "before the residual add, so no bias there is a constant residual add"
            )
        rule = writer.bias
        if writer.site == "mlp" and info.is_moe_layer(layer) and arch.experts is not None:  # rule: "never"
            experts = arch.experts.down.format(layer=layer, expert="E")
            raise RefusedEdit(f"{arch.model_type}: {experts} cannot carry a bias: {rule.reason}")
        if rule.mode == "always":
            return info.tensor_name(writer.module.format(layer=layer), "bias")
        if rule.mode == "config_key":
            return self._bias_via_key(writer, layer, rule.key or "", rule.siblings)
        redeclare = arch.redeclare
        if redeclare is None:
            raise RefusedEdit(
                f"{arch.model_type}: {writer.module.format(layer=layer)} cannot carry a bias: {rule.reason}"
            )
        blocking = [k for k in redeclare.requires_unset if info.text_config.get(k) not in (None, False)]
        if blocking:
            raise RefusedEdit(
                f"{arch.model_type}: {writer.module.format(layer=layer)} cannot carry a bias ({rule.reason}), and "
                f"re-declaring as {redeclare.model_type} is exact only when {', '.join(blocking)} is null/false"
            )
        target_arch = get_arch(redeclare.model_type)
        for site in redeclare.always_enable:
            rule = target_arch.writer(site).bias
            self._bias_via_key(target_arch.writer(site), layer, rule.key or "", rule.siblings)
        target = target_arch.writer(writer.site).bias
        self.config_updates["model_type"] = redeclare.model_type
        self.config_updates["architectures"] = [redeclare.architecture]
        note = f"re-declared {arch.model_type} as {redeclare.model_type}: {redeclare.why_exact}"
        if note not in self.notes:
            self.notes.append(note)
        return self._bias_via_key(writer, layer, target.key or "", target.siblings)

    def _bias_via_key(self, writer: Writer, layer: int, key: str, siblings: Iterable[str]) -> str:
        info = self.info
        if not info.text_config.get(key):
            self.config_updates[key] = True
            for lyr in range(info.num_layers):
                for template in siblings:
                    module = template.format(layer=lyr)
                    if info.has_tensor(module, "bias"):
                        continue
                    weight = info.tensors[info.tensor_name(module, "weight")]
                    out_features = weight.shape[0]
                    name = info.tensor_name(module, "bias", must_exist=False)
                    reason = f"zero bias: {key}=true gives every listed projection a bias"
                    # Kept in float32 whatever the weights' dtype: a bias this creates carries a whole vector edit,
                    # and rounding a large vector to bf16 alone moves the logits by ~0.1. It costs a few KB, an
                    # fp32 engine then serves the edit exactly, and a bf16 engine rounds it on load as before.
                    self.new_tensors.setdefault(name, NewTensor((out_features,), "F32", reason=reason))
        return self.info.tensor_name(writer.module.format(layer=layer), "bias", must_exist=False)

    def untie_lm_head(self) -> None:
        """Give the model its own lm_head (a copy of the embedding as stored) and mark it untied."""
        info = self.info
        if not info.tied:
            return
        emb = info.tensor_name(info.arch.embeddings[0])
        head = info.stored_name(f"{info.arch.lm_head}.weight")
        meta = info.tensors[emb]
        self.new_tensors[head] = NewTensor(meta.shape, meta.dtype, copy_of=emb, reason=f"lm_head untied: copy of {emb}")
        for fn, label in self.tied_row_ops:
            self.add_op(head, OUTPUT_SIDE, fn, label, rowwise=True)
        if emb in self.resized:
            self.resized[head] = self.resized[emb]
        self.config_updates[info.arch.tie_key] = False
        note = "untied lm_head from the embedding so the readout keeps the original embedding"
        if note not in self.notes:
            self.notes.append(note)

    # ---- reading --------------------------------------------------------------
    @property
    def touched(self) -> set[str]:
        """Source tensors whose values change."""
        return {n for n in self.ops if n in self.info.tensors}

    def source_reads(self) -> set[str]:
        """Every source tensor the bake must load."""
        reads = {r for ops in self.ops.values() for op in ops for r in op.reads}
        return self.touched | reads | {t.copy_of for t in self.new_tensors.values() if t.copy_of}

    def shape_of(self, name: str) -> tuple[int, ...]:
        """A tensor's shape in the export (after any row appended by a vocabulary edit)."""
        if name in self.resized:
            return self.resized[name]
        return self.new_tensors[name].shape if name in self.new_tensors else self.info.tensors[name].shape

    def working_bytes(self, name: str) -> int:
        """About how many bytes computing ``name`` holds at once: the whole tensor in float32 when an op must
        see it whole (see ``blocks``), plus a few blocks' worth of temporaries."""
        shape = self.shape_of(name)
        count = int(np.prod(shape))
        whole = len(shape) < 2 or not all(op.rowwise for op in self.ops.get(name, []))
        return (4 * count if whole else 0) + 6 * min(BLOCK_BYTES, 4 * count)

    def new_config(self) -> dict[str, Any]:
        return self.info.updated_config(self.config_updates)

    def apply(self, name: str, raw: np.ndarray) -> np.ndarray:
        """Run every op for ``name`` in fp32 on stored values ``raw`` and cast back to the stored dtype."""
        if not self.ops.get(name):
            return raw
        return from_float32(self.apply_float32(name, raw), self._dtype(name))

    def apply_float32(self, name: str, raw: np.ndarray) -> np.ndarray:
        """The edited tensor before the cast to its stored dtype (what `wedit verify` compares the file with)."""
        return self._whole(name, lambda _source, start, stop: raw[start:stop])

    def materialize_new(self, name: str, read_source: Callable[[str], np.ndarray]) -> np.ndarray:
        """A new tensor's stored values: zeros or a copy of a source tensor, then its ops."""
        return from_float32(self.materialize_new_float32(name, read_source), self._dtype(name))

    def materialize_new_float32(self, name: str, read_source: Callable[[str], np.ndarray]) -> np.ndarray:
        copy_of = self.new_tensors[name].copy_of
        whole = read_source(copy_of) if copy_of else None
        return self._whole(name, lambda _source, start, stop: whole[start:stop])  # type: ignore[index]

    def _whole(self, name: str, read_rows: RowReader, only_stage: int | None = None) -> np.ndarray:
        out = np.empty(self.shape_of(name), dtype=np.float32)
        for first, values in self.blocks(name, read_rows, only_stage=only_stage):
            out[first : first + len(values)] = values
        return out

    def blocks(
        self, name: str, read_rows: RowReader, *, only_stage: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The edited tensor ``name`` in float32, as ``(first row, rows)`` blocks in order.

        Each source row is read once, in order (the caller may hash what it reads). Rows a vocabulary edit
        appends start as zeros; a new tensor starts as zeros or as its source. When every op is row-wise, one
        block at a time exists in float32; otherwise the whole tensor does (the writers' projections). A block
        is the caller's until it asks for the next one, which may reuse its memory. ``only_stage``: run only the
        ops of that stage (what an op that reads ``name`` sees).
        """
        ops = sorted(self.ops.get(name, []), key=lambda op: (op.stage, op.order))
        if only_stage is not None:
            ops = [op for op in ops if op.stage == only_stage]
        shape = self.shape_of(name)
        if not shape:
            raise EditorError(f"{name}: a scalar tensor; editor edits vectors and matrices only")
        rows = shape[0]
        step = rows_per_block(shape)
        spans = [(first, min(first + step, rows)) for first in range(0, rows, step)]
        if len(shape) >= 2 and all(op.rowwise for op in ops):
            buffer = np.empty((min(step, rows), *shape[1:]), dtype=np.float32)
            for first, stop in spans:
                values = self._read_block(name, first, stop, read_rows, buffer[: stop - first])
                for op in ops:
                    values = op.fn(values, first)
                self._check_finite(name, values, ops)
                yield first, values
            return
        work = np.empty(shape, dtype=np.float32)
        for first, stop in spans:
            self._read_block(name, first, stop, read_rows, work[first:stop])
        for op in ops:
            if op.rowwise and len(shape) >= 2:  # the same blocks as above, so both paths compute the same values
                for first, stop in spans:
                    work[first:stop] = op.fn(work[first:stop], first)
            elif op.reads:
                work = op.fn(work, 0, *(self._output_side(r) for r in op.reads))
            else:
                work = op.fn(work, 0)
        for first, stop in spans:
            self._check_finite(name, work[first:stop], ops)
            yield first, work[first:stop]

    def _output_side(self, name: str) -> np.ndarray:
        """``name`` in float32 with only its output-side ops applied (none of them reads another tensor)."""
        read_source = self.read_source
        if read_source is None:
            raise RuntimeError("internal: an op reads another tensor; set BakeProgram.read_source before applying")
        source, _ = self._source(name)
        whole = read_source(source) if source else None
        return self._whole(name, lambda _s, start, stop: whole[start:stop], only_stage=OUTPUT_SIDE)  # type: ignore[index]

    def _source(self, name: str) -> tuple[str | None, int]:
        """The source tensor whose stored rows a tensor starts from (None: zeros) and how many rows it has."""
        source = self.new_tensors[name].copy_of if name in self.new_tensors else name
        if source is None:
            return None, 0
        return source, self.info.tensors[source].shape[0]

    def _read_block(self, name: str, start: int, stop: int, read_rows: RowReader, out: np.ndarray) -> np.ndarray:
        shape = self.shape_of(name)
        source, have = self._source(name)
        dtype = self.info.tensors[source].dtype if source else self._dtype(name)
        if source and stop <= have:
            raw = read_rows(source, start, stop)
        else:  # rows past the source's end (appended by a vocabulary edit) start as zeros
            raw = np.zeros((stop - start, *shape[1:]), dtype=STORAGE[dtype])
            if source and start < have:
                raw[: have - start] = read_rows(source, start, have)
        try:
            return to_float32(raw, dtype, out)
        except ValueError as err:
            raise EditorError(f"{name}: {err}; editor edits float tensors only") from None

    @staticmethod
    def _check_finite(name: str, values: np.ndarray, ops: list[TensorOp]) -> None:
        if not np.isfinite(values).all():
            raise RefusedEdit(
                f"baking {name} produced NaN or Inf ({', '.join(op.label for op in ops)}); check the plan"
            )

    def _dtype(self, name: str) -> str:
        return self.new_tensors[name].dtype if name in self.new_tensors else self.info.tensors[name].dtype


def compile_plan(edits: Iterable[Edit], info: ModelInfo) -> BakeProgram:
    """Validate every edit against ``info`` and compile the plan into tensor operations."""
    edits = list(edits)
    program = BakeProgram(info)
    for edit in edits:
        edit.validate_for(info)
    # Biases first: an ablation earlier in the plan must also project a bias
    # that a later residual_add creates.
    for edit in edits:
        edit.prepare(program)
    for edit in edits:
        edit.bake(program)
    return program
