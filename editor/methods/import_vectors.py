"""Bring steering vectors made by other tools, and turn them into residual_add edits.

Two formats:

- llama.cpp control vectors (GGUF, ``general.architecture = "controlvector"``,
  one F32 tensor ``direction.N`` per layer), as written by llama.cpp's
  ``cvector-generator`` and by repeng's ``export_gguf``. llama.cpp adds
  ``direction.N`` (times the strength) to the residual stream at the *output
  of block N* (0-based): ``llama_control_vector_apply`` in
  ``src/llama-adapter.cpp`` stores the vector for block ``il`` at offset
  ``n_embd * (il - 1)`` of a buffer that ``common_control_vector_load_one`` in
  ``common/common.cpp`` fills from ``direction.<il>``, and each model graph
  calls ``build_cvec(cur, il)`` right after the FFN residual add. Block 0 never
  has a vector: the loader rejects ``direction.0``.
- a safetensors file of per-layer vectors ``layer.N`` with a JSON sidecar
  (``FILE.json``) naming the site (``block``: after block N; ``attn``: after
  block N's attention sub-block) and the sign (``1`` add, ``-1`` subtract).

``ControlVectors.hook`` applies the vectors at run time exactly where the
source tool does (a forward hook on the decoder block output), independently
of the bias that the export bakes; tests prove the two agree.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from editor.core.model_info import ModelInfo
from editor.edits import ResidualAdd
from editor.errors import EditorError

Site = Literal["block", "attn"]


@dataclass
class ControlVectors:
    source: str
    vectors: dict[int, np.ndarray]  # block index -> vector (already multiplied by sign)
    site: Site = "block"
    model_hint: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def hidden_size(self) -> int:
        return len(next(iter(self.vectors.values())))

    def select(self, layers: tuple[int, int] | None) -> ControlVectors:
        if layers is None:
            return self
        lo, hi = layers
        kept = {i: v for i, v in self.vectors.items() if lo <= i <= hi}
        if not kept:
            raise EditorError(
                f"{self.source}: no vectors in layers {lo}-{hi}; the file has layers {span(self.vectors)}"
            )
        return ControlVectors(self.source, kept, self.site, self.model_hint, self.notes)

    def check_against(self, info: ModelInfo) -> None:
        if self.model_hint and self.model_hint != info.arch.model_type:
            raise EditorError(
                f"{self.source}: made for model type {self.model_hint!r} but the target is {info.arch.model_type!r}; "
                "use the vectors with the model they were trained on"
            )
        if self.hidden_size != info.hidden_size:
            raise EditorError(
                f"{self.source}: vectors have {self.hidden_size} entries but the model's hidden size is "
                f"{info.hidden_size}; they belong to a different model"
            )
        outside = [i for i in self.vectors if not 0 <= i < info.num_layers]
        if outside:
            raise EditorError(
                f"{self.source}: layer {outside[0]} is outside the model (layers 0..{info.num_layers - 1}); "
                "pick the matching model or pass --layers"
            )

    def to_edits(self, info: ModelInfo, scale: float = 1.0) -> list[ResidualAdd]:
        self.check_against(info)
        sub_block = "mlp" if self.site == "block" else "attn"
        return [
            ResidualAdd(layer=i, site=sub_block, vector=[float(x) for x in v], scale=scale)
            for i, v in sorted(self.vectors.items())
        ]

    def hook(self, model, info: ModelInfo, scale: float = 1.0):
        """Run-time reference: add each vector where the source tool adds it. Returns hook handles."""
        import torch

        handles = []
        for layer, vector in sorted(self.vectors.items()):
            delta = scale * torch.from_numpy(vector.astype(np.float32))
            if self.site == "block":
                module = model.get_submodule(f"{info.arch.layers}.{layer}")

                def add(_m, _a, output, delta=delta):
                    hidden = output[0] if isinstance(output, tuple) else output
                    hidden = hidden + delta.to(hidden.device, hidden.dtype)
                    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            else:
                module = model.get_submodule(info.arch.attn.module.format(layer=layer))

                def add(_m, _a, output, delta=delta):
                    return output + delta.to(output.device, output.dtype)

            handles.append(module.register_forward_hook(add))
        return handles


def span(vectors: dict[int, np.ndarray]) -> str:
    return f"{min(vectors)}-{max(vectors)}" if vectors else "(none)"


def _check_finite(source: str, name: str, vector: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(vector))
    if bad.size:
        raise EditorError(f"{source}: {name} has a non-finite value at index {int(bad[0])}; regenerate the vector")


def read_llamacpp_gguf(path: Path) -> ControlVectors:
    from gguf import GGUFReader

    source = str(path)
    if not path.is_file():
        raise EditorError(f"{path}: control vector file not found; check the path")
    try:
        reader = GGUFReader(path)
    except Exception as err:  # gguf raises ValueError, struct.error, OSError... on damaged files
        raise EditorError(
            f"{path}: not a readable GGUF file ({type(err).__name__}: {err}); re-export the control vector"
        ) from None

    def field_str(key: str) -> str | None:
        f = reader.get_field(key)
        if f is None:
            return None
        return bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace")

    arch = field_str("general.architecture")
    if arch != "controlvector":
        raise EditorError(
            f"{path}: general.architecture is {arch!r}, not 'controlvector'; this is not a llama.cpp control vector"
        )
    vectors: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise EditorError(f"{path}: tensor {tensor.name!r} is not named direction.N; llama.cpp would reject it too")
        layer = int(index)
        if layer == 0:
            raise EditorError(f"{path}: direction.0 is invalid: llama.cpp never steers block 0; drop that tensor")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        if len(tensor.shape) != 1 and int(np.prod(tensor.shape)) != data.size:
            raise EditorError(f"{path}: {tensor.name} is not one-dimensional")
        _check_finite(source, tensor.name, data)
        if vectors and data.size != len(next(iter(vectors.values()))):
            raise EditorError(f"{path}: {tensor.name} has {data.size} entries, unlike the other directions")
        vectors[layer] = vectors.get(layer, 0) + data  # llama.cpp sums repeated layers
    if not vectors:
        raise EditorError(f"{path}: no direction.N tensors; the control vector is empty")
    return ControlVectors(source, vectors, "block", field_str("controlvector.model_hint"))


def read_safetensors_vectors(path: Path) -> ControlVectors:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise EditorError(f"{path}: vector file not found; check the path")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise EditorError(
            f"{path}: needs a sidecar {sidecar.name} with "
            '{"site": "block" or "attn", "sign": 1 or -1}; write it next to the vectors'
        )
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise EditorError(f"{sidecar}: not valid JSON (line {err.lineno}): {err.msg}") from None
    if not isinstance(meta, dict):
        raise EditorError(f'{sidecar}: must hold a JSON object like {{"site": "block", "sign": 1}}')
    site, sign = meta.get("site"), meta.get("sign", 1)
    if site not in ("block", "attn"):
        raise EditorError(
            f"{sidecar}: 'site' must be 'block' (after block N) or 'attn' (after its attention); got {site!r}"
        )
    if sign not in (1, -1):
        raise EditorError(f"{sidecar}: 'sign' must be 1 or -1; got {sign!r}")
    try:
        tensors = load_file(path)
    except Exception as err:  # safetensors raises SafetensorError, OSError...
        raise EditorError(f"{path}: not a readable safetensors file ({err}); re-save the vectors") from None
    vectors = {}
    for name, value in tensors.items():
        prefix, _, index = name.partition(".")
        if prefix != "layer" or not index.isdigit():
            raise EditorError(f"{path}: tensor {name!r} is not named layer.N; rename it")
        data = np.asarray(value, dtype=np.float32).reshape(-1)
        _check_finite(str(path), name, data)
        vectors[int(index)] = sign * data
    if not vectors:
        raise EditorError(f"{path}: no layer.N tensors")
    sizes = {v.size for v in vectors.values()}
    if len(sizes) > 1:
        raise EditorError(f"{path}: vectors have different sizes {sorted(sizes)}; they must all match the hidden size")
    return ControlVectors(str(path), vectors, site, meta.get("model_type"))


def read_vectors(path: str | Path) -> ControlVectors:
    path = Path(path)
    if path.suffix == ".gguf":
        return read_llamacpp_gguf(path)
    if path.suffix == ".safetensors":
        return read_safetensors_vectors(path)
    raise EditorError(
        f"{path}: unknown vector format; pass a llama.cpp control vector (.gguf) or .safetensors with a .json sidecar"
    )


def parse_layer_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text, flags=re.ASCII)
    if match is None or int(match.group(1)) > int(match.group(2)):
        raise EditorError(f"--layers {text!r}: write an inclusive range like 4-20")
    return int(match.group(1)), int(match.group(2))


def check_scale(scale: float) -> float:
    if not math.isfinite(scale):
        raise EditorError(f"--scale {scale} is not a finite number")
    return scale


def write_llamacpp_gguf(path: Path, vectors: dict[int, np.ndarray], model_hint: str) -> Path:
    """Write vectors as a llama.cpp control vector (the layout cvector-generator and repeng write)."""
    from gguf import GGUFWriter

    if 0 in vectors:
        raise EditorError("llama.cpp control vectors cannot steer block 0; start at layer 1")
    writer = GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(vectors))
    for layer, vector in sorted(vectors.items()):
        writer.add_tensor(f"direction.{layer}", np.asarray(vector, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
