"""Read a Hugging Face safetensors checkpoint directory without loading its weights.

Tensor names, shapes and dtypes come from the safetensors headers (the first
bytes of each file), so planning an edit on a 70B model reads a few kilobytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editor.core.model_info import ModelInfo, TensorMeta
from editor.errors import EditorError
from editor.io.tensor_file import FileRange, nbytes, read_raw

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "pytorch_model.pt")


def read_header(path: Path) -> tuple[dict[str, TensorMeta], dict[str, str]]:
    """Tensor metadata and the ``__metadata__`` block of one safetensors file."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EditorError(f"{path}: not a readable safetensors file ({err}); re-download or re-export it") from None
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + length
    try:
        metas = {
            name: TensorMeta(tuple(entry["shape"]), entry["dtype"], data_start + entry["data_offsets"][0])
            for name, entry in header.items()
        }
    except (KeyError, TypeError, IndexError):
        raise EditorError(f"{path}: malformed safetensors header; re-download or re-export it") from None
    # A shard cut short by an interrupted download still has a whole header; its data does not reach the end.
    expected = 8 + length + max((entry["data_offsets"][1] for entry in header.values()), default=0)
    actual = path.stat().st_size
    if actual < expected:
        raise EditorError(f"{path}: truncated ({actual} of {expected} bytes); re-download or re-export this shard")
    return metas, metadata


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
        config_path = path / "config.json"
        if not config_path.is_file():
            raise EditorError(f"{path}: no config.json; a Hugging Face checkpoint directory needs one")
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise EditorError(f"{config_path}: not valid JSON (line {err.lineno}): {err.msg}") from None

        index = path / INDEX_FILE
        if index.is_file():
            weight_map = dict(json.loads(index.read_text())["weight_map"])
            files = sorted(set(weight_map.values()))
            sharded = True
        elif (path / SINGLE_FILE).is_file():
            files, weight_map, sharded = [SINGLE_FILE], {}, False
        else:
            pickles = [p for p in PICKLE_FILES if (path / p).exists()]
            if pickles:
                raise EditorError(
                    f"{path}: only pickle weights ({pickles[0]}); editor reads safetensors only. Convert with: "
                    'python -c "from transformers import AutoModelForCausalLM as M; '
                    f"M.from_pretrained('{path}').save_pretrained('{path}-safetensors')\""
                )
            raise EditorError(f"{path}: no model.safetensors or {INDEX_FILE}; is this a model checkpoint?")

        metas: dict[str, TensorMeta] = {}
        file_metadata: dict[str, dict[str, str]] = {}
        for name in files:
            file = path / name
            if not file.is_file():
                raise EditorError(f"{index}: names shard {name}, which is missing; re-download the checkpoint")
            file_metas, file_metadata[name] = read_header(file)
            metas.update(file_metas)
            if not sharded:
                weight_map = dict.fromkeys(file_metas, name)
        return cls(path, config, weight_map, metas, file_metadata, sharded)

    @property
    def files(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def info(self) -> ModelInfo:
        return ModelInfo(self.config, self.metas, where=str(self.path / "config.json"))

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
