"""Read one safetensors header and refuse anything the safetensors library itself would refuse.

Only the header (8 bytes of length, then JSON) is read, never the tensor data, so checking a 70B
checkpoint costs a few kilobytes per shard. The rules follow what ``safetensors.safe_open``
enforces (tests/test_checkpoint_validation.py holds one case per rule, each checked against
``safe_open`` too): a header length of at most 100 MB that fits in the file; the header UTF-8
JSON holding an object; ``__metadata__`` absent, null or a map of strings; every other key a
tensor with a known ``dtype``, a ``shape`` of unsigned integers and two ``data_offsets`` whose
difference is the shape's element count times the dtype's size; the tensors' byte ranges
contiguous from 0, with no gap or overlap, ending exactly at the end of the file.

Where safetensors is lenient and editor need not be, this is stricter: a duplicate key (safetensors
keeps the last), a negative number or a nesting deeper than 64 anywhere in the header, a tensor
written as a JSON array instead of an object, and the sub-byte dtypes (F4, F6_*) editor cannot copy
tensor by tensor are refused too.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from editor.core.model_info import TensorMeta
from editor.errors import EditorError
from editor.io.tensor_file import DTYPE_SIZES

HEADER_LIMIT = 100_000_000  # bytes; safetensors refuses a longer header ("header too large")
_U64_MAX = 2**64 - 1
_MAX_DEPTH = 64
_FIX = "re-download or re-export it"


class _Bad(ValueError):
    """A header rule broken; the message says which."""


def _refuse_constant(name: str) -> Any:
    raise _Bad(f"{name} is not JSON")  # Python's json reads NaN/Infinity; safetensors (serde_json) does not


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Bad(f"number {text} is out of range")  # serde_json refuses it; Python would read inf
    return value


def _unsigned(text: str) -> int:
    if text.startswith("-"):
        raise _Bad(f"negative number {text}")
    return int(text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Bad(f"key {key!r} appears twice")
        out[key] = value
    return out


def _check_strings(value: Any, depth: int = 0) -> None:
    """Every string UTF-8 encodable (JSON escapes can spell lone surrogates) and nesting bounded."""
    if depth > _MAX_DEPTH:
        raise _Bad(f"nested deeper than {_MAX_DEPTH}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("a string holds an unpaired surrogate escape") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, depth + 1)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, depth + 1)


def parse_header_json(blob: bytes) -> dict[str, Any]:
    """The header's JSON object, read as strictly as safetensors reads it."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Bad(f"header is not UTF-8 (byte {err.start})") from None
    try:
        header = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite,
            parse_int=_unsigned,
        )
    except json.JSONDecodeError as err:
        raise _Bad(f"header is not JSON ({err.msg} at character {err.pos})") from None
    except RecursionError:
        raise _Bad(f"header nested deeper than {_MAX_DEPTH}") from None
    except ValueError as err:  # _Bad from a hook, or an integer with thousands of digits
        raise _Bad(str(err).splitlines()[0]) from None
    if not isinstance(header, dict):
        raise _Bad(f"header is a JSON {type(header).__name__}, not an object")
    _check_strings(header)
    return header


def _u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX


def _tensor_bytes(name: str, dtype: Any, shape: Any) -> int:
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise _Bad(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_u64(d) for d in shape):
        raise _Bad(f"tensor {name!r} has shape {shape!r}, not a list of unsigned integers")
    count = 1
    for dim in shape:  # overflow checked at each step, as safetensors does (a later 0 does not excuse it)
        count *= dim
        if count > _U64_MAX:
            raise _Bad(f"tensor {name!r}: shape {shape} overflows 64 bits")
    size = count * DTYPE_SIZES[dtype]
    if size > _U64_MAX:
        raise _Bad(f"tensor {name!r}: shape {shape} overflows 64 bits")
    return size


def _tensors(header: dict[str, Any]) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str]]:
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Bad("__metadata__ is not a map of strings")
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise _Bad(f"tensor {name!r} lacks dtype, shape or data_offsets")
        size = _tensor_bytes(name, entry["dtype"], entry["shape"])
        offsets = entry["data_offsets"]
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_u64(o) for o in offsets):
            raise _Bad(f"tensor {name!r} has data_offsets {offsets!r}, not two unsigned integers")
        start, end = offsets
        if end < start or end - start != size:
            raise _Bad(
                f"tensor {name!r}: data_offsets {offsets} span {end - start} bytes, "
                f"its {entry['dtype']} shape {entry['shape']} needs {size}"
            )
        tensors[name] = (entry["dtype"], tuple(entry["shape"]), start, end)
    return tensors, metadata


def _data_length(tensors: dict[str, tuple[str, tuple[int, ...], int, int]]) -> int:
    """Bytes the tensors cover, contiguous from 0; raises at the first gap or overlap."""
    covered = 0
    for name, (_, _, start, end) in sorted(tensors.items(), key=lambda item: (item[1][2], item[1][3])):
        if start != covered:
            what = "gap" if start > covered else "overlap"
            raise _Bad(f"tensor {name!r} starts at byte {start} of the data, not {covered} ({what})")
        covered = end
    return covered


def read_header(path: Path) -> tuple[dict[str, TensorMeta], dict[str, str]]:
    """Tensor metadata (absolute byte offsets) and the ``__metadata__`` block of one safetensors file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise EditorError(f"{path}: {size} bytes, too short for a safetensors file; {_FIX}")
            length = int.from_bytes(head, "little")
            if length > HEADER_LIMIT:
                raise EditorError(
                    f"{path}: header length {length} bytes is over safetensors' limit of {HEADER_LIMIT} "
                    f"(a damaged or hostile file); {_FIX}"
                )
            if 8 + length > size:
                raise EditorError(f"{path}: header length {length} bytes runs past the end of the file; {_FIX}")
            blob = fh.read(length)
    except OSError as err:
        raise EditorError(f"{path}: cannot read ({err.strerror or err}); {_FIX}") from None
    try:
        tensors, metadata = _tensors(parse_header_json(blob))
        covered = _data_length(tensors)
    except _Bad as err:
        raise EditorError(f"{path}: not a valid safetensors file: {err}; {_FIX}") from None
    expected = 8 + length + covered
    if size < expected:
        # A shard cut short by an interrupted download still has a whole header; its data does not reach the end.
        raise EditorError(f"{path}: truncated ({size} of {expected} bytes); re-download or re-export this shard")
    if size > expected:
        raise EditorError(
            f"{path}: {size - expected} bytes after the last tensor (safetensors refuses such a file); {_FIX}"
        )
    data_start = 8 + length
    metas = {name: TensorMeta(shape, dtype, data_start + start) for name, (dtype, shape, start, _) in tensors.items()}
    return metas, metadata
