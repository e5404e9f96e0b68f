"""Raw safetensors I/O in numpy: read one tensor, write a file tensor by tensor.

The exporter never needs torch. Reading a single tensor seeks to its bytes;
writing streams a header and then each tensor in turn, either from an array
or as a kernel copy of a byte range of a source file, so rewriting a shard in
which one tensor changed costs about one copy of that shard and holds one
tensor in memory. bfloat16 has no numpy dtype: it is stored as uint16 bits and
cast through ``ml_dtypes.bfloat16`` (widened exactly, narrowed with
round-to-nearest-even, the rounding torch uses; a NaN stays a NaN of its sign).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

# Storage dtype of each safetensors dtype (BF16 as its raw bits).
STORAGE: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
# Byte sizes of every dtype editor reads, including those it copies but cannot compute with (FP8, unsigned
# ints, complex). safetensors also knows sub-byte dtypes (F4, F6_*); editor refuses those.
DTYPE_SIZES = {name: dt.itemsize for name, dt in STORAGE.items()} | {
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "C64": 8,
}


@cache
def bfloat16() -> np.dtype:
    """The dtype BF16 arithmetic goes through, viewed over the stored uint16 bits. Imported on first use: ml_dtypes
    takes most of a second to load, and every `wedit` command reads this module."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def itemsize(dtype: str) -> int:
    if dtype not in DTYPE_SIZES:
        raise ValueError(f"unknown safetensors dtype {dtype}")
    return DTYPE_SIZES[dtype]


def nbytes(shape: Iterable[int], dtype: str) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * itemsize(dtype)


def to_float32(raw: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """A float32 copy of stored values (exact for BF16/F16/F32), in ``out`` when given (float32, same shape)."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"cannot edit a tensor stored as {dtype}")
    out = np.empty(raw.shape, dtype=np.float32) if out is None else out
    if dtype == "BF16":
        raw = raw.view(bfloat16())
    np.copyto(out, raw, casting="unsafe")  # the cast astype makes (exact from BF16/F16; F64 rounds)
    return out


def from_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    """Cast float32 values to the stored dtype, rounding to nearest even like torch."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(values.shape, dtype=STORAGE[dtype])
    return encode_into(values, dtype, out)


def encode_into(values: np.ndarray, dtype: str, out: np.ndarray) -> np.ndarray:
    """``from_float32(values, dtype)`` written into ``out`` (stored dtype, same shape) with no other memory:
    ``values`` (float32) is only read, and the cast runs in numpy's small buffers, never a full-size temporary.
    Returns ``out``."""
    target = out.view(bfloat16()) if dtype == "BF16" else out
    # Finite values that round past the largest bf16/f16 become inf, and NaNs stay NaN, as torch casts them:
    # expected results, not warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        np.copyto(target, values, casting="unsafe")  # the same cast astype makes
    return out


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[start, start + length)`` of ``path``: a tensor copied without decoding."""

    path: Path
    start: int
    length: int


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray | FileRange

    @property
    def nbytes(self) -> int:
        return nbytes(self.shape, self.dtype)


def read_raw(path: Path, start: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """One tensor's stored values, read at its byte offset."""
    count = nbytes(shape, dtype)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(count)
    if len(data) != count:
        raise OSError(f"{path}: short read at byte {start}")
    if dtype not in STORAGE:
        raise ValueError(f"cannot read a tensor stored as {dtype}")
    return np.frombuffer(data, dtype=STORAGE[dtype]).reshape(shape).copy()


# Bit patterns that are NaN or Inf, per float dtype stored as raw bytes (FP8 layouts as in the OCP spec).
_NON_FINITE_BITS = {
    "BF16": lambda raw: (raw.view("<u2") & 0x7F80) == 0x7F80,
    "F8_E5M2": lambda raw: (raw & 0x7C) == 0x7C,
    "F8_E4M3": lambda raw: (raw & 0x7F) == 0x7F,  # e4m3fn: no Inf, NaN is S.1111.111
    "F8_E4M3FNUZ": lambda raw: raw == 0x80,
    "F8_E5M2FNUZ": lambda raw: raw == 0x80,
    "F8_E8M0": lambda raw: raw == 0xFF,
    "F16": lambda raw: ~np.isfinite(raw.view("<f2")),
    "F32": lambda raw: ~np.isfinite(raw.view("<f4")),
    "F64": lambda raw: ~np.isfinite(raw.view("<f8")),
    "C64": lambda raw: ~np.isfinite(raw.view("<f4")),
}


def count_non_finite(path: Path, start: int, length: int, dtype: str, chunk: int = 64 << 20) -> int:
    """How many NaN/Inf values the tensor stored at ``path[start:start + length]`` holds, read in chunks."""
    test = _NON_FINITE_BITS.get(dtype)
    if test is None:
        return 0  # integers and booleans are always finite
    step = max(chunk - chunk % itemsize(dtype), itemsize(dtype))
    total = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            data = fh.read(min(left, step))
            if not data or len(data) % itemsize(dtype):
                raise OSError(f"{path}: ended before byte {start + length}")
            total += int(np.count_nonzero(test(np.frombuffer(data, dtype=np.uint8))))
            left -= len(data)
    return total


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def write_at(fd: int, data: memoryview | bytes, offset: int) -> None:
    """Write all of ``data`` at byte ``offset`` of ``fd`` (positional: threads can share the file)."""
    view = memoryview(data).cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def array_bytes(array: np.ndarray) -> memoryview:
    """The stored bytes of a C-contiguous array, without a copy."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def copy_range(src_fd: int, start: int, length: int, dst_fd: int, dst_offset: int) -> None:
    """Copy ``length`` bytes of ``src_fd`` from ``start`` to ``dst_offset`` of ``dst_fd``: a kernel copy where
    possible (copy_file_range, as `cp` does), positional on both sides so threads can share the files."""
    offset, to, left = start, dst_offset, length
    try:
        while left > 0:
            done = os.copy_file_range(src_fd, dst_fd, left, offset, to)
            if done == 0:
                break
            offset, to, left = offset + done, to + done, left - done
    except OSError:
        pass  # e.g. no kernel copy between these filesystems: finish below
    while left > 0:
        chunk = os.pread(src_fd, min(left, 16 << 20), offset)
        if not chunk:
            raise OSError(f"source ended before byte {start + length}")
        write_at(dst_fd, chunk, to)
        offset, to, left = offset + len(chunk), to + len(chunk), left - len(chunk)


@dataclass(frozen=True)
class Slot:
    """Where a tensor goes in a safetensors file being written: name, dtype, shape, absolute byte offset."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return nbytes(self.shape, self.dtype)


def plan_file(
    tensors: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None
) -> tuple[bytes, list[Slot]]:
    """The header of a safetensors file holding ``(name, dtype, shape)`` in this order, and each tensor's slot.

    Offsets follow from shapes and dtypes alone, so the header is written first and the tensors can then be
    written in any order, each as soon as it is computed.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    spans = []
    for name, dtype, shape in tensors:
        size = nbytes(shape, dtype)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        spans.append((name, dtype, tuple(shape), offset))
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    start = 8 + len(blob)
    return len(blob).to_bytes(8, "little") + blob, [Slot(n, d, sh, start + o) for n, d, sh, o in spans]


def write_safetensors(path: Path, entries: list[Entry], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file entry by entry (tensor order and offsets as given)."""
    header, slots = plan_file(((e.name, e.dtype, e.shape) for e in entries), metadata)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, memoryview(header))
        for entry, slot in zip(entries, slots):
            if isinstance(entry.data, FileRange):
                with open(entry.data.path, "rb") as src:
                    copy_range(src.fileno(), entry.data.start, entry.data.length, fd, slot.offset)
            else:
                array = np.ascontiguousarray(entry.data)
                if array.nbytes != entry.nbytes:
                    raise ValueError(f"internal: {entry.name} has {array.nbytes} bytes, header says {entry.nbytes}")
                write_at(fd, array_bytes(array), slot.offset)
    finally:
        os.close(fd)
