"""What an edit needs to know about one concrete checkpoint.

``ModelInfo`` joins the architecture table with a checkpoint's config.json
and its tensor names, shapes and dtypes (read from safetensors headers, never
the data), so edits can be validated and planned without loading weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from editor.core.architectures import ArchSpec, Writer, get_arch
from editor.errors import EditorError


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string, e.g. "BF16"
    start: int = 0  # absolute byte offset of the data in its file (0 when not read from a file)


@dataclass
class ModelInfo:
    config: dict[str, Any]
    tensors: dict[str, TensorMeta]
    where: str = "config.json"
    arch: ArchSpec = field(init=False)

    def __post_init__(self) -> None:
        self.arch = get_arch(self.config.get("model_type"), self.where)

    # ---- dimensions -------------------------------------------------------
    def _cfg(self, key: str | None) -> Any:
        return None if key is None else self.config.get(key)

    def _size(self, key: str | None, default: int | None = None) -> int:
        """A positive whole number config.json must hold (``default`` when the key may be absent or null)."""
        value = self._cfg(key)
        if value is None:
            if default is not None:
                return default
            raise EditorError(
                f"{self.where}: no {key!r}, which the {self.arch.model_type} architecture reads; "
                "add it to config.json or re-download the checkpoint"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EditorError(f"{self.where}: {key} is {value!r}, not a positive whole number; fix config.json")
        return value

    @property
    def hidden_size(self) -> int:
        return self._size(self.arch.hidden_key)

    @property
    def num_layers(self) -> int:
        return self._size(self.arch.layers_key)

    @property
    def num_heads(self) -> int:
        return self._size(self.arch.heads_key)

    @property
    def num_kv_heads(self) -> int:
        return self._size(self.arch.kv_heads_key, default=self.num_heads)

    @property
    def head_dim(self) -> int:
        if self._cfg(self.arch.head_dim_key) is None:
            return self.hidden_size // self.num_heads
        return self._size(self.arch.head_dim_key)

    @property
    def intermediate_size(self) -> int:
        multiple = self.arch.intermediate_default_multiple
        if multiple is not None and self._cfg(self.arch.intermediate_key) is None:
            return multiple * self.hidden_size
        return self._size(self.arch.intermediate_key)

    @property
    def tied(self) -> bool:
        value = self.config.get(self.arch.tie_key)
        return self.arch.tied_by_default if value is None else bool(value)

    @property
    def parallel_residual(self) -> bool:
        key = self.arch.parallel_residual_key
        return bool(key and self.config.get(key, True))

    # ---- validation helpers -------------------------------------------------
    def check_layer(self, layer: int, what: str = "layer") -> None:
        if not 0 <= layer < self.num_layers:
            raise EditorError(
                f"{what} {layer} is out of range: this {self.arch.model_type} model has layers 0..{self.num_layers - 1}"
            )

    def check_head(self, head: int) -> None:
        if not 0 <= head < self.num_heads:
            raise EditorError(
                f"head {head} is out of range: this model has {self.num_heads} attention heads per layer "
                f"(0..{self.num_heads - 1}; KV heads do not count)"
            )

    # ---- tensor names -----------------------------------------------------
    def module_path(self, template: str, layer: int | None = None) -> str:
        return template.format(layer=layer) if layer is not None else template

    def tensor_name(self, module: str, param: str = "weight", *, must_exist: bool = True) -> str:
        """The on-disk name of ``module.param``, trying the known aliases and prefixes."""
        wanted = f"{module}.{param}"
        for candidate in self._candidates(wanted):
            if candidate in self.tensors:
                return candidate
        if must_exist:
            raise EditorError(
                f"{self.where}: tensor {wanted!r} not found in the checkpoint; is model_type "
                f"{self.arch.model_type!r} right for these weights?"
            )
        # A tensor we are about to create: name it the way its weight sibling is named.
        weight = self.tensor_name(module, "weight")
        return weight[: -len("weight")] + param

    def has_tensor(self, module: str, param: str = "weight") -> bool:
        return any(c in self.tensors for c in self._candidates(f"{module}.{param}"))

    def _candidates(self, name: str) -> list[str]:
        out = [name]
        for canonical, alias in self.arch.aliases:
            if name == canonical:
                out.append(alias)
        prefix = self.arch.optional_prefix
        if prefix:
            out += [c[len(prefix) :] for c in list(out) if c.startswith(prefix)]
        return out

    def writer_weight(self, writer: Writer, layer: int) -> str:
        return self.tensor_name(writer.module.format(layer=layer))

    def writer_in_features(self, writer: Writer) -> int:
        return self.head_dim * self.num_heads if writer.site == "attn" else self.intermediate_size
