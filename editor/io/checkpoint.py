"""Read a Hugging Face safetensors checkpoint directory without loading its weights, refusing a damaged one.

Tensor names, shapes and dtypes come from the safetensors headers (the first
bytes of each file), so planning an edit on a 70B model reads a few kilobytes.
``Checkpoint.open`` is the one gate every command passes: config.json a JSON
object, each shard's header as strict as safetensors (``safetensors_header``),
the index a JSON object whose ``weight_map`` names plain shard files in this
folder and exactly the tensors the shards' headers hold; pickle weights are
refused, never loaded. ``Checkpoint.info`` adds the shapes config.json implies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editor.core.model_info import ModelInfo, TensorMeta
from editor.core.shapes import check_shapes
from editor.errors import EditorError
from editor.io.json_file import read_json_object
from editor.io.safetensors_header import read_header
from editor.io.tensor_file import FileRange, count_non_finite, nbytes, read_raw

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "pytorch_model.pt")
# Bytes the NaN/Inf scan reads at a time: memory stays flat (a few times this) whatever the shard or tensor size,
# and on the built-in model 4 MiB reads are as fast as 64 MiB ones (the bit tests stay in the CPU's cache).
SCAN_CHUNK = 4 << 20


@dataclass(frozen=True)
class NonFinite:
    """Every tensor of a checkpoint that holds NaN or Inf, with how many, in the order the shards store them."""

    path: Path  # the checkpoint directory
    counts: dict[str, int]  # tensor -> NaN/Inf values; never empty
    files: dict[str, str]  # tensor -> shard file inside path

    @property
    def first(self) -> str:
        return next(iter(self.counts))

    @property
    def values(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """'SHARD: tensor NAME holds N NaN/Inf values (T tensors hold V in all)', for one line of a message."""
        first, count = self.first, self.counts[self.first]
        where = f"{self.path / self.files[first]}: tensor {first} holds {count} NaN/Inf value{'s' * (count != 1)}"
        tensors = len(self.counts)
        return where + (f" ({tensors} tensors hold {self.values} in all)" if tensors > 1 else "")

    def record(self) -> dict[str, Any]:
        """What an export's manifest keeps: the counts, by tensor."""
        return {"tensors": len(self.counts), "values": self.values, "counts": dict(self.counts)}


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    weight_map: dict[str, str]  # tensor name -> file name inside path
    metas: dict[str, TensorMeta]
    file_metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    sharded: bool = False

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        if not path.is_dir():
            raise EditorError(
                f"{path}: not a checkpoint directory; pass a directory with config.json and *.safetensors"
            )
        config = _read_config(path / "config.json")
        index = path / INDEX_FILE
        if index.is_file():
            weight_map, sharded = _read_index(index), True
        elif (path / SINGLE_FILE).is_file():
            weight_map, sharded = {}, False
        else:
            pickles = [p for p in PICKLE_FILES if (path / p).exists()]
            if pickles:
                raise EditorError(
                    f"{path}: only pickle weights ({pickles[0]}), which editor never loads (unpickling can run "
                    "code); if you trust the file, convert it with: "
                    'python -c "from transformers import AutoModelForCausalLM as M; '
                    f"M.from_pretrained('{path}').save_pretrained('{path}-safetensors')\""
                )
            raise EditorError(f"{path}: no model.safetensors or {INDEX_FILE}; is this a model checkpoint?")

        metas: dict[str, TensorMeta] = {}
        file_metadata: dict[str, dict[str, str]] = {}
        for name in sorted(set(weight_map.values())) if sharded else [SINGLE_FILE]:
            file = path / name
            if not file.is_file():
                raise EditorError(f"{index}: names shard {name}, which is missing; re-download the checkpoint")
            file_metas, file_metadata[name] = read_header(file)
            if sharded:
                _check_shard_against_index(index, name, file_metas, weight_map)
            else:
                weight_map = dict.fromkeys(file_metas, name)
            metas.update(file_metas)
        absent = next((t for t in weight_map if t not in metas), None)
        if absent is not None:
            raise EditorError(
                f"{index}: names tensor {absent} in {weight_map[absent]}, whose header does not hold it; "
                "re-download the checkpoint"
            )
        return cls(path, config, weight_map, metas, file_metadata, sharded)

    @property
    def files(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def info(self) -> ModelInfo:
        """The architecture joined with this checkpoint; every tensor the table names has the shape config implies."""
        info = ModelInfo(self.config, self.metas, where=str(self.path / "config.json"))
        check_shapes(info)
        return info

    def non_finite(self, advance: Callable[[int], object] | None = None) -> Iterator[tuple[str, int]]:
        """(tensor, count) for every tensor holding NaN or Inf, in file order: reads every float tensor's data once,
        ``SCAN_CHUNK`` bytes at a time (never a whole tensor or shard); ``advance(bytes)`` follows each tensor."""
        for file in self.files:
            for name in sorted(self.tensors_in(file), key=lambda n: self.metas[n].start):
                meta = self.metas[name]
                length = nbytes(meta.shape, meta.dtype)
                count = count_non_finite(self.file_of(name), meta.start, length, meta.dtype, chunk=SCAN_CHUNK)
                if advance is not None:
                    advance(length)
                if count:
                    yield name, count

    def scan_non_finite(self, advance: Callable[[int], object] | None = None) -> NonFinite | None:
        """Every tensor holding NaN or Inf (see ``non_finite``), or None when every value is finite."""
        counts = dict(self.non_finite(advance))
        return NonFinite(self.path, counts, {n: self.weight_map[n] for n in counts}) if counts else None

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data in the shards (what a scan of every tensor reads)."""
        return sum(nbytes(m.shape, m.dtype) for m in self.metas.values())

    def tensors_in(self, file: str) -> list[str]:
        return [n for n, f in self.weight_map.items() if f == file]

    def file_of(self, name: str) -> Path:
        return self.path / self.weight_map[name]

    def read_raw(self, name: str) -> np.ndarray:
        """One tensor's stored values (BF16 as uint16 bits), read at its offset."""
        meta = self.metas[name]
        return read_raw(self.file_of(name), meta.start, meta.shape, meta.dtype)

    def byte_range(self, name: str) -> FileRange:
        meta = self.metas[name]
        return FileRange(self.file_of(name), meta.start, nbytes(meta.shape, meta.dtype))


def _read_config(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise EditorError(f"{config_path.parent}: no config.json; a Hugging Face checkpoint directory needs one")
    config = read_json_object(config_path, "fix or re-download it")
    return config


def _plain_shard_name(name: object) -> bool:
    """A file directly in the checkpoint folder: an index must not point elsewhere on the disk."""
    return (
        isinstance(name, str)
        and name.endswith(".safetensors")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def _read_index(index: Path) -> dict[str, str]:
    data = read_json_object(index, "re-download it")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise EditorError(f"{index}: no weight_map (a map of tensor name to shard file); re-download it")
    bad = next((f for f in weight_map.values() if not _plain_shard_name(f)), None)
    if bad is not None or not all(isinstance(t, str) for t in weight_map):
        raise EditorError(f"{index}: weight_map names {bad!r}, not a .safetensors file in this folder; re-download it")
    return dict(weight_map)


def _check_shard_against_index(
    index: Path, shard: str, metas: dict[str, TensorMeta], weight_map: dict[str, str]
) -> None:
    for tensor in metas:
        where = weight_map.get(tensor)
        if where != shard:
            said = f"places it in {where}" if where else "does not name it"
            raise EditorError(
                f"{index}: {shard} holds tensor {tensor}, but the index {said}; re-download the checkpoint"
            )
