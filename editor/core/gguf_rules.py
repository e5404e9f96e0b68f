"""What llama.cpp's converter and model graphs accept, per architecture, as data; and the check a GGUF export passes.

Two tables, both read in the llama.cpp that llama-cpp-python vendors (the one
whose converter ``wedit gguf`` runs):

- ``CONVERTER_ARCH``: the HF class in config.json's ``architectures[0]`` to
  the llama.cpp architecture its converter class writes
  (``conversion/*.py``: ``ModelBase.register(...)`` and ``model_arch``).
- ``GRAPHS``: per llama.cpp architecture, the tensors beyond the weights
  every checkpoint has (biases, a separate output matrix) that its graph
  creates (``src/models/<arch>.cpp``): ``create_tensor(..., TENSOR_NOT_REQUIRED)``
  is optional, flag 0 is required, ``create_tensor_qkv`` creates optional
  q/k/v biases. llama.cpp refuses a GGUF holding a tensor its graph does not
  create ("wrong number of tensors"), so an extra bias is never ignored: it
  stops the load. tests/test_gguf.py checks both tables against that source.

A checkpoint's tensor names are mapped to GGUF names with the converter's own
name map (``gguf.TensorNameMap``). The same verdict fills ``wedit archs``'s
llama.cpp column (from the tensors a probe edit adds) and refuses an export
before any conversion (from its whole tensor list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

CONVERTER_ARCH = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
    "Olmo2ForCausalLM": "olmo2",
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "gptneox",
    "MixtralForCausalLM": "llama",
    "Qwen2MoeForCausalLM": "qwen2moe",
    "Qwen3MoeForCausalLM": "qwen3moe",
    # multimodal wrappers: the text model's GGUF (the vision tower goes to a separate mmproj file, untouched)
    "Gemma3ForConditionalGeneration": "gemma3",
    "LlavaForConditionalGeneration": "llama",
}
# A wrapper's language-model tensors carry a prefix the converter strips before mapping names (either layout).
_WRAPPER_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."), ("language_model.", ""))

_QKV = frozenset({"attn_qkv.bias", "attn_q.bias", "attn_k.bias", "attn_v.bias"})  # create_tensor_qkv
_MLP = frozenset({"ffn_gate.bias", "ffn_down.bias", "ffn_up.bias"})
# The tensor kinds the rules are about; every other tensor is the architecture's own and the converter's business.
EXTRAS = _QKV | _MLP | {"attn_output.bias", "output.weight", "output.bias"}


@dataclass(frozen=True)
class Graph:
    """The extra tensors one llama.cpp graph creates (per-layer kinds without the ``blk.N.`` prefix)."""

    source: str  # under src/models/ in the vendored llama.cpp
    optional: frozenset[str]
    required: frozenset[str] = frozenset()

    @property
    def accepts(self) -> frozenset[str]:
        return self.optional | self.required


GRAPHS = {
    "llama": Graph("llama.cpp", _QKV | _MLP | {"attn_output.bias", "output.weight"}),
    "qwen2": Graph("qwen2.cpp", _QKV | {"output.weight", "output.bias"}),
    "qwen3": Graph("qwen3.cpp", _QKV | {"output.weight"}),
    "gemma2": Graph("gemma2.cpp", _QKV),
    "gemma3": Graph("gemma3.cpp", _QKV | {"output.weight"}),
    "phi3": Graph("phi3.cpp", _QKV | {"output.weight"}),
    "olmo2": Graph("olmo2.cpp", _QKV, required=frozenset({"output.weight"})),
    "qwen2moe": Graph("qwen2moe.cpp", _QKV, required=frozenset({"output.weight"})),
    "qwen3moe": Graph("qwen3moe.cpp", _QKV | {"output.weight"}),
    "gpt2": Graph(
        "gpt2.cpp",
        frozenset({"output.weight"}),
        required=frozenset({"attn_qkv.bias", "attn_output.bias", "ffn_down.bias", "ffn_up.bias"}),
    ),
    "gptneox": Graph(
        "gptneox.cpp",
        frozenset(),
        required=frozenset({"attn_qkv.bias", "attn_output.bias", "ffn_down.bias", "ffn_up.bias", "output.weight"}),
    ),
}


@dataclass(frozen=True)
class ConfigRule:
    """A config.json value a llama.cpp graph computes as if it were always set that way: a checkpoint with
    another value converts and loads, and then computes another function."""

    key: str
    value: Any
    default: Any  # what transformers assumes when config.json omits the key
    why: str


# Measured on tiny random checkpoints against transformers (fp32, greedy): with the other value the GGUF loads and
# its continuations differ.
CONFIG_RULES: dict[str, tuple[ConfigRule, ...]] = {
    "qwen3moe": (
        ConfigRule(
            "norm_topk_prob",
            True,
            False,
            "llama.cpp's qwen3moe graph always renormalises the picked experts' router weights (the GGUF has no "
            "flag for it), and this checkpoint's norm_topk_prob is false",
        ),
    ),
}


@dataclass(frozen=True)
class Verdict:
    serves: bool
    gguf_arch: str | None
    reason: str = ""


@cache
def _name_map(gguf_arch: str, n_layers: int):
    import gguf

    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[gguf_arch]
    return gguf.get_tensor_name_map(arch, n_layers)


def gguf_kind(gguf_arch: str, tensor: str, n_layers: int) -> str | None:
    """The GGUF name the converter gives ``tensor``, without ``blk.N.``; None for a tensor it does not map."""
    for prefix, plain in _WRAPPER_PREFIXES:
        if tensor.startswith(prefix):
            tensor = plain + tensor[len(prefix) :]
            break
    mapped = _name_map(gguf_arch, n_layers).get_name(tensor, try_suffixes=(".weight", ".bias"))
    return re.sub(r"^blk\.\d+\.", "", mapped) if mapped else None


def _layer_pattern(tensor: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", tensor)


def llama_cpp_verdict(
    architecture: str,
    tensors: Iterable[str],
    n_layers: int,
    *,
    whole: bool,
    lm_head: str | None = None,
    config: dict[str, Any] | None = None,
) -> Verdict:
    """Whether llama.cpp converts and loads a checkpoint of HF class ``architecture`` holding ``tensors``.

    ``whole``: ``tensors`` is the checkpoint's complete list, so a tensor the graph requires can be found missing
    (a probe lists only what an edit touches or adds, so only tensors the graph has no place for count).
    ``lm_head``: the checkpoint's own (untied) output matrix, if it has one. It counts as output.weight even where
    the converter has no name for it: Gemma-2's converter drops lm_head.weight, so its GGUF would read the
    output from the embedding, another model.
    ``config``: the checkpoint's config.json, checked against ``CONFIG_RULES`` (a probe passes none).
    """
    gguf_arch = CONVERTER_ARCH.get(architecture)
    if gguf_arch is None:
        return Verdict(False, None, f"wedit knows no llama.cpp converter class for {architecture}")
    graph = GRAPHS[gguf_arch]
    present: dict[str, str] = {}
    for tensor in tensors:
        kind = gguf_kind(gguf_arch, tensor, n_layers)
        if kind in EXTRAS:
            present.setdefault(kind, tensor)
    if lm_head is not None:
        present["output.weight"] = lm_head
    where = f"llama.cpp's {gguf_arch} graph (src/models/{graph.source})"
    for kind, tensor in sorted(present.items()):
        if kind not in graph.accepts:
            return Verdict(
                False,
                gguf_arch,
                f"{where} creates no {kind} (from {_layer_pattern(tensor)}), and llama.cpp refuses a GGUF "
                "holding a tensor its graph does not create",
            )
    for rule in CONFIG_RULES.get(gguf_arch, ()):
        if config is not None and config.get(rule.key, rule.default) != rule.value:
            return Verdict(False, gguf_arch, rule.why)
    missing = sorted(graph.required - present.keys()) if whole else []
    if missing:
        return Verdict(False, gguf_arch, f"{where} requires {missing[0]}, which this checkpoint does not have")
    return Verdict(True, gguf_arch)
