"""Settings of the steps after a plan: export (the recipe's ``export`` section), verification (``verify``), GGUF (``gguf``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from editor.core.settings import Settings

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def size_in_bytes(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


class ExportSettings(Settings):
    max_shard_size: str | int = Field("5GB", description="largest shard to write, e.g. 5GB, 500MB or 2GiB")
    attach_figures: bool = Field(
        True, description="copy the run's attribution and steering figures into the export and its card"
    )
    # Left out of model_dump when off, so the export stage's settings (and the runs keyed on them) stay as they were.
    allow_non_finite: bool = Field(
        False,
        description="export a base whose weights hold NaN/Inf (copied unchanged, recorded in the manifest; "
        "`wedit verify` refuses the result) instead of refusing it",
        exclude_if=lambda v: not v,
    )

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, value: str | int) -> str | int:
        if size_in_bytes(value) <= 0:
            raise ValueError("must be a positive size")
        return value

    @property
    def max_shard_bytes(self) -> int:
        return size_in_bytes(self.max_shard_size)


class VerifySettings(Settings):
    vllm: bool = Field(
        False, description="also load the export in stock vLLM (needs vllm installed) and compare greedy continuations"
    )
    max_new_tokens: int = Field(24, ge=1, description="tokens per greedy continuation")
    llama_cpp: bool = Field(
        False,
        description="also load the export's GGUF files in llama.cpp (needs llama-cpp-python) and compare with "
        "transformers; without recorded files an f32 GGUF is converted for the check",
    )


# llama.cpp file types wedit writes: f32 from llama.cpp's converter, the others from it through llama.cpp's quantizer.
GgufType = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]


class GgufSettings(Settings):
    types: list[GgufType] = Field(
        ["q8_0"], min_length=1, description="GGUF file types to write (llama.cpp's converter, then its quantizer)"
    )

    @field_validator("types")
    @classmethod
    def _once(cls, types: list[str]) -> list[str]:
        return list(dict.fromkeys(types))
