"""What an edit needs to know about one concrete checkpoint.

``ModelInfo`` joins the architecture table with a checkpoint's config.json
and its tensor names, shapes and dtypes (read from safetensors headers, never
the data), so edits can be validated and planned without loading weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from editor.core.architectures import ArchSpec, Writer, get_arch
from editor.errors import EditorError, RefusedEdit

Expert = int | Literal["shared"]
"""A routed expert's index, or the shared expert of an MoE layer that has one."""


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
        section = self.arch.text_config
        if section is not None:
            text = self.config.get(section)
            inner = text.get("model_type") if isinstance(text, dict) else None
            if inner not in self.arch.text_model_types:
                raise EditorError(
                    f"{self.where}: a {self.arch.model_type} checkpoint whose {section}.model_type is {inner!r}; "
                    f"editor edits {self.arch.model_type} with a {' or '.join(self.arch.text_model_types)} "
                    "language model only"
                )

    @property
    def text_config(self) -> dict[str, Any]:
        """The language model's part of config.json (all of it, unless the model wraps one)."""
        section = self.arch.text_config
        return self.config[section] if section else self.config

    def updated_config(self, updates: dict[str, Any]) -> dict[str, Any]:
        """config.json with ``updates`` (keys of the language model) applied where they belong: at the top, or in
        a wrapper's text section, except the tie key, which is the wrapper's own (and its section's, where that
        has one, so the two never disagree)."""
        config = dict(self.config)
        section = self.arch.text_config
        if section is None:
            return config | updates
        text = dict(config[section])
        for key, value in updates.items():
            if key == self.arch.tie_key:
                config[key] = value
                if key in text:
                    text[key] = value
            else:
                text[key] = value
        config[section] = text
        return config

    # ---- dimensions -------------------------------------------------------
    def _cfg(self, key: str | None) -> Any:
        return None if key is None else self.text_config.get(key)

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
        value = self.config.get(self.arch.tie_key)  # a wrapper's own key decides, whatever its text_config says
        return self.arch.tied_by_default if value is None else bool(value)

    @property
    def parallel_residual(self) -> bool:
        key = self.arch.parallel_residual_key
        return bool(key and self.text_config.get(key, True))

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

    def stored_name(self, name: str) -> str:
        """What to call a tensor the export adds (an untied lm_head): a wrapper stored in the older layout
        (``language_model.model.``) gets the older name, which its loaders also expect."""
        pairs = self.arch.disk_prefixes
        if pairs and any(t.startswith(pairs[0][1]) for t in self.tensors):
            for memory, disk in pairs:
                if name.startswith(memory):
                    return disk + name[len(memory) :]
        return name

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
        for memory, disk in self.arch.disk_prefixes:  # a wrapper's older on-disk names
            out += [disk + c[len(memory) :] for c in list(out) if c.startswith(memory)]
        return out

    def writer_weight(self, writer: Writer, layer: int) -> str:
        """The one weight of a dense writer (an MoE layer's MLP has several: ``writer_weights``)."""
        if writer.site == "mlp" and self.is_moe_layer(layer):
            raise EditorError(
                f"internal: layer {layer}'s MLP is a mixture of experts; ask for writer_weights or expert_weight"
            )
        return self.tensor_name(writer.module.format(layer=layer))

    def writer_in_features(self, writer: Writer, layer: int | None = None, expert: Expert | None = None) -> int:
        """Input width of the writer's projection (in an MoE layer's MLP: of one routed expert, or the shared one)."""
        if writer.site == "attn":
            return self.head_dim * self.num_heads
        if layer is not None and self.is_moe_layer(layer):
            return self.expert_width(expert)
        return self.intermediate_size

    # ---- mixture of experts -------------------------------------------------
    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer``'s MLP is routed experts (the rule transformers' decoder layer applies)."""
        experts = self.arch.experts
        if experts is None:
            return False
        if experts.dense_layers_key and layer in (self.text_config.get(experts.dense_layers_key) or []):
            return False
        step = self._size(experts.sparse_step_key, default=1) if experts.sparse_step_key else 1
        return self.num_experts > 0 and (layer + 1) % step == 0

    @property
    def num_experts(self) -> int:
        experts = self.arch.experts
        if experts is None:
            return 0
        key = next((k for k in experts.count_keys if self.text_config.get(k) is not None), experts.count_keys[0])
        return self._size(key)

    def has_shared_expert(self, layer: int) -> bool:
        return self.is_moe_layer(layer) and self.arch.experts is not None and self.arch.experts.shared is not None

    def expert_width(self, expert: Expert | None = None) -> int:
        experts = self.arch.experts
        if experts is None:
            raise EditorError(f"internal: {self.arch.model_type} has no experts")
        if expert == "shared":
            return self._size(experts.shared_width_key)
        return self._size(experts.width_key)

    def check_expert(self, layer: int, expert: Expert) -> None:
        if self.arch.experts is None:
            raise RefusedEdit(f"{self.arch.model_type}: every MLP is dense; there are no experts to edit")
        if not self.is_moe_layer(layer):
            raise EditorError(
                f"layer {layer} has a dense MLP (mlp_only_layers / decoder_sparse_step in config.json): no experts "
                "to edit; pick an MoE layer"
            )
        if expert == "shared":
            if not self.has_shared_expert(layer):
                raise EditorError(f"this {self.arch.model_type} model has no shared expert; name a routed expert")
        elif not 0 <= expert < self.num_experts:
            raise EditorError(
                f"expert {expert} is out of range: layer {layer} has {self.num_experts} experts (0..{self.num_experts - 1})"
            )

    def expert_weight(self, layer: int, expert: Expert) -> str:
        """The on-disk down projection of one routed expert, or of the shared expert."""
        experts = self.arch.experts
        assert experts is not None
        if expert == "shared":
            assert experts.shared is not None
            return self.tensor_name(experts.shared.format(layer=layer))
        return self.tensor_name(experts.down.format(layer=layer, expert=expert))

    def expert_list(self, layer: int) -> list[Expert]:
        """Every expert that writes layer ``layer``'s MLP output: the routed ones, then the shared one."""
        routed: list[Expert] = list(range(self.num_experts))
        return routed + (["shared"] if self.has_shared_expert(layer) else [])

    def writer_weights(self, writer: Writer, layer: int) -> list[str]:
        """Every on-disk weight whose output the writer adds to the residual stream (each routed expert's down
        projection and the shared expert's, in an MoE layer's MLP)."""
        if writer.site == "mlp" and self.is_moe_layer(layer):
            return [self.expert_weight(layer, e) for e in self.expert_list(layer)]
        return [self.writer_weight(writer, layer)]

    def write_module(self, writer: Writer, layer: int) -> str:
        """The module (in transformers' model) whose output is the writer's residual write."""
        if writer.site == "mlp" and self.is_moe_layer(layer):
            assert self.arch.experts is not None
            return self.arch.experts.block.format(layer=layer)
        return writer.module.format(layer=layer)

    def output_modules(self, writer: Writer, layer: int) -> list[str]:
        """The modules whose outputs sum to the writer's residual write: the writer itself, or in an MoE layer's
        MLP the fused routed experts and the shared expert's down projection. A hook that edits the write goes
        on these, beside the hooks that edit one expert, so that every hook of an expert fires in plan order."""
        experts = self.arch.experts
        if writer.site == "mlp" and self.is_moe_layer(layer) and experts is not None:
            return [experts.fused.format(layer=layer)] + (
                [experts.shared.format(layer=layer)] if experts.shared else []
            )
        return [writer.module.format(layer=layer)]
