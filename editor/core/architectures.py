"""The architecture table: everything editor knows about a model type, as data.

One entry per ``model_type``. Edits never branch on the model type; they ask
this table which tensor is W_O, how it is stored, whether a bias can carry a
constant, and which norms sit around each block. Module paths are the ones the
``*ForCausalLM`` class in transformers uses; ``{layer}`` is filled in with the
block index. Checkpoints on disk may store names without the base-model
prefix (original GPT-2 does), which ``ModelInfo`` resolves.

Long because it is the table itself: the types that describe a family, then one entry per family, each with
the reasons its refusals give.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from editor.errors import EditorError

Orientation = Literal["out_in", "in_out"]
"""``out_in``: ``torch.nn.Linear`` layout ``[out, in]``; ``in_out``: GPT-2 ``Conv1D`` layout ``[in, out]``."""


@dataclass(frozen=True)
class BiasRule:
    """How a writer's bias can carry a constant added to the residual stream.

    ``always``: the writer always has a bias tensor.
    ``config_key``: setting ``key`` to true in config.json gives the writer a
    bias, and also gives every sibling listed (per layer) a bias, which must
    then be written as zeros so the reload finds every tensor it expects.
    ``never``: no config of this model type has a bias here; ``reason`` says why.
    """

    mode: Literal["always", "config_key", "never"]
    key: str | None = None
    siblings: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Writer:
    """A module whose output is added into the residual stream."""

    site: Literal["attn", "mlp"]
    module: str
    orientation: Orientation
    bias: BiasRule
    # A norm applied to the writer's output before the residual add (Gemma-2/3,
    # OLMo-2). Then a bias is not a residual add and a projection of the
    # output is not a projection of what reaches the stream.
    output_norm: str | None = None


@dataclass(frozen=True)
class Redeclare:
    """An exact re-declaration as another model type, used when only that one can carry a bias."""

    model_type: str
    architecture: str
    # config keys that must be unset/false/null for the two to compute the same function
    requires_unset: tuple[str, ...]
    why_exact: str
    # sites whose bias key the target must always turn on, because the source
    # already has biases there (Qwen2's q/k/v) that the target only reads with it
    always_enable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experts:
    """A mixture-of-experts MLP: a router picks ``top_k`` of ``count`` experts per token, and each picked expert's
    down projection writes its output, times the router's weight, into the residual stream (beside a shared
    expert's, when there is one). So the MLP's residual write is a sum of linear maps of per-token inputs, and
    an edit of "the MLP output projection" is the same edit of every expert's down projection.

    Checkpoints store one 2-D down projection per expert (``down``, on disk); transformers 5 fuses them into one
    ``[experts, hidden, width]`` parameter of the ``fused`` module in memory, whose forward takes the tokens,
    the picked experts and their weights.
    """

    block: str  # in memory: the sparse block; its output is the MLP's residual write
    fused: str  # in memory: the experts module (gate_up_proj [E, 2W, H], down_proj [E, H, W], act_fn)
    router: str  # in memory: returns (logits, top-k weights, top-k indices)
    down: str  # on disk: one expert's down projection, ``{expert}`` filled in
    # config.json names the count either way (transformers maps num_experts to num_local_experts for some
    # families and writes the latter); the first key present is read
    count_keys: tuple[str, ...]
    width_key: str  # each routed expert's intermediate size
    shared: str | None = None  # on disk and in memory: the shared expert's down projection
    shared_width_key: str | None = None
    # Qwen-MoE: layers listed in mlp_only_layers, or whose index + 1 is not a multiple of decoder_sparse_step,
    # keep a dense MLP (the Writer's module)
    dense_layers_key: str | None = None
    sparse_step_key: str | None = None


@dataclass(frozen=True)
class ArchSpec:
    model_type: str
    causal_lm_class: str
    layers: str
    attn: Writer
    mlp: Writer
    embeddings: tuple[str, ...]
    lm_head: str
    final_norm: str
    pre_norms: tuple[str, ...]
    hidden_key: str = "hidden_size"
    layers_key: str = "num_hidden_layers"
    heads_key: str = "num_attention_heads"
    kv_heads_key: str | None = "num_key_value_heads"
    head_dim_key: str | None = "head_dim"
    intermediate_key: str = "intermediate_size"
    # GPT-2 leaves n_inner null to mean 4 * n_embd; elsewhere a missing intermediate size is an error
    intermediate_default_multiple: int | None = None
    tie_key: str = "tie_word_embeddings"
    tied_by_default: bool = False
    # other names the same tensor has in checkpoints written by older code
    aliases: tuple[tuple[str, str], ...] = ()
    # prefix that original checkpoints may omit (GPT-2 stores "h.0..." not "transformer.h.0...")
    optional_prefix: str | None = None
    parallel_residual_key: str | None = None
    embedding_scaled: bool = False
    redeclare: Redeclare | None = None
    experts: Experts | None = None
    # A multimodal wrapper: config.json keeps the language model's sizes in this section, the transformers class
    # loads with this Auto class, and the checkpoint may store a module under another prefix (memory, disk).
    text_config: str | None = None
    text_model_types: tuple[str, ...] = ()  # the text_config model types the wrapper entry describes
    auto_class: str = "AutoModelForCausalLM"
    disk_prefixes: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def writer(self, site: str) -> Writer:
        if site == "attn":
            return self.attn
        if site == "mlp":
            return self.mlp
        raise EditorError(f"unknown site {site!r}; use 'attn' (after attention) or 'mlp' (after the MLP block)")

    @property
    def writers(self) -> tuple[Writer, Writer]:
        return (self.attn, self.mlp)


_LLAMA_ATTN_SIBLINGS = (
    "{layers}.{layer}.self_attn.q_proj",
    "{layers}.{layer}.self_attn.k_proj",
    "{layers}.{layer}.self_attn.v_proj",
    "{layers}.{layer}.self_attn.o_proj",
)
_LLAMA_MLP_SIBLINGS = (
    "{layers}.{layer}.mlp.gate_proj",
    "{layers}.{layer}.mlp.up_proj",
    "{layers}.{layer}.mlp.down_proj",
)

_NO_BIAS = "transformers builds this projection with bias=False and no config key turns a bias on"


def _llama_like(
    model_type: str,
    cls: str,
    *,
    attn_bias: BiasRule,
    mlp_bias: BiasRule,
    post_norms: bool = False,
    extra_pre_norms: tuple[str, ...] = (),
    tied: bool = False,
    embedding_scaled: bool = False,
    redeclare: Redeclare | None = None,
    experts: Experts | None = None,
    notes: tuple[str, ...] = (),
) -> ArchSpec:
    layers = "model.layers"
    return ArchSpec(
        model_type=model_type,
        causal_lm_class=cls,
        layers=layers,
        attn=Writer(
            site="attn",
            module=f"{layers}.{{layer}}.self_attn.o_proj",
            orientation="out_in",
            bias=attn_bias,
            output_norm=f"{layers}.{{layer}}.post_attention_layernorm" if post_norms else None,
        ),
        mlp=Writer(
            site="mlp",
            module=f"{layers}.{{layer}}.mlp.down_proj",
            orientation="out_in",
            bias=mlp_bias,
            output_norm=f"{layers}.{{layer}}.post_feedforward_layernorm" if post_norms else None,
        ),
        embeddings=("model.embed_tokens",),
        lm_head="lm_head",
        final_norm="model.norm",
        pre_norms=extra_pre_norms,
        tied_by_default=tied,
        embedding_scaled=embedding_scaled,
        redeclare=redeclare,
        experts=experts,
        notes=notes,
    )


def _siblings(templates: tuple[str, ...], layers: str = "model.layers") -> tuple[str, ...]:
    return tuple(t.replace("{layers}", layers) for t in templates)


_LLAMA_ATTENTION_BIAS = BiasRule("config_key", "attention_bias", _siblings(_LLAMA_ATTN_SIBLINGS))
_LLAMA_MLP_BIAS = BiasRule("config_key", "mlp_bias", _siblings(_LLAMA_MLP_SIBLINGS))
_PRE_NORMS = ("model.layers.{layer}.input_layernorm", "model.layers.{layer}.post_attention_layernorm")

ARCHITECTURES: dict[str, ArchSpec] = {}


def _register(spec: ArchSpec) -> None:
    ARCHITECTURES[spec.model_type] = spec


_register(
    _llama_like(
        "llama",
        "LlamaForCausalLM",
        attn_bias=_LLAMA_ATTENTION_BIAS,
        mlp_bias=_LLAMA_MLP_BIAS,
        extra_pre_norms=_PRE_NORMS,
        notes=("attention_bias turns on q/k/v/o biases together; mlp_bias turns on gate/up/down biases together",),
    )
)
_register(
    _llama_like(
        "mistral",
        "MistralForCausalLM",
        attn_bias=BiasRule("never", reason=_NO_BIAS),
        mlp_bias=BiasRule("never", reason=_NO_BIAS),
        extra_pre_norms=_PRE_NORMS,
        redeclare=Redeclare(
            model_type="llama",
            architecture="LlamaForCausalLM",
            requires_unset=("sliding_window",),
            why_exact="with sliding_window null, Mistral computes exactly what Llama computes",
        ),
    )
)
_register(
    _llama_like(
        "qwen2",
        "Qwen2ForCausalLM",
        attn_bias=BiasRule("never", reason="Qwen2 has q/k/v biases only; o_proj is built with bias=False"),
        mlp_bias=BiasRule("never", reason=_NO_BIAS),
        extra_pre_norms=_PRE_NORMS,
        redeclare=Redeclare(
            model_type="llama",
            architecture="LlamaForCausalLM",
            requires_unset=("use_sliding_window",),
            why_exact="without sliding windows, Qwen2 is Llama with attention_bias (its q/k/v biases kept, o_proj bias added)",
            always_enable=("attn",),
        ),
    )
)
_register(
    _llama_like(
        "qwen3",
        "Qwen3ForCausalLM",
        attn_bias=_LLAMA_ATTENTION_BIAS,
        mlp_bias=BiasRule("never", reason=_NO_BIAS),
        extra_pre_norms=_PRE_NORMS,
        notes=("q_norm/k_norm normalise per head after q/k projection; they do not touch the residual stream",),
    )
)
_register(
    _llama_like(
        "gemma2",
        "Gemma2ForCausalLM",
        attn_bias=_LLAMA_ATTENTION_BIAS,
        mlp_bias=BiasRule("never", reason=_NO_BIAS),
        post_norms=True,
        extra_pre_norms=("model.layers.{layer}.input_layernorm", "model.layers.{layer}.pre_feedforward_layernorm"),
        tied=True,
        embedding_scaled=True,
        notes=("block outputs are RMS-normalised after o_proj/down_proj before the residual add",),
    )
)
_register(
    _llama_like(
        "gemma3_text",
        "Gemma3ForCausalLM",
        attn_bias=_LLAMA_ATTENTION_BIAS,
        mlp_bias=BiasRule("never", reason=_NO_BIAS),
        post_norms=True,
        extra_pre_norms=("model.layers.{layer}.input_layernorm", "model.layers.{layer}.pre_feedforward_layernorm"),
        tied=True,
        embedding_scaled=True,
        notes=("text-only Gemma-3; block outputs are RMS-normalised after o_proj/down_proj",),
    )
)
_register(
    _llama_like(
        "olmo2",
        "Olmo2ForCausalLM",
        attn_bias=_LLAMA_ATTENTION_BIAS,
        mlp_bias=BiasRule("never", reason=_NO_BIAS),
        post_norms=True,
        notes=("no pre-norms: block outputs are RMS-normalised after o_proj/down_proj",),
    )
)
_NO_EXPERT_BIAS = "no expert's down projection (nor a dense layer's) has a bias, and no config key gives them one"


def _moe(on_disk: str, width_key: str, *, shared: bool = False, dense_layers: bool = False) -> Experts:
    block = "model.layers.{layer}.mlp"
    return Experts(
        block=block,
        fused=f"{block}.experts",
        router=f"{block}.gate",
        down=f"model.layers.{{layer}}.{on_disk}.experts.{{expert}}"
        + (".w2" if on_disk == "block_sparse_moe" else ".down_proj"),
        count_keys=("num_local_experts", "num_experts"),
        width_key=width_key,
        shared=f"{block}.shared_expert.down_proj" if shared else None,
        shared_width_key="shared_expert_intermediate_size" if shared else None,
        dense_layers_key="mlp_only_layers" if dense_layers else None,
        sparse_step_key="decoder_sparse_step" if dense_layers else None,
    )


_register(
    _llama_like(
        "mixtral",
        "MixtralForCausalLM",
        attn_bias=BiasRule("never", reason=_NO_BIAS),
        mlp_bias=BiasRule("never", reason=_NO_EXPERT_BIAS),
        extra_pre_norms=_PRE_NORMS,
        experts=_moe("block_sparse_moe", "intermediate_size"),
        notes=(
            "every layer's MLP is num_local_experts experts (w1/w3/w2 on disk), num_experts_per_tok picked per token",
        ),
    )
)
_register(
    _llama_like(
        "qwen2_moe",
        "Qwen2MoeForCausalLM",
        attn_bias=BiasRule("never", reason="Qwen2-MoE has q/k/v biases only; o_proj is built with bias=False"),
        mlp_bias=BiasRule("never", reason=_NO_EXPERT_BIAS),
        extra_pre_norms=_PRE_NORMS,
        experts=_moe("mlp", "moe_intermediate_size", shared=True, dense_layers=True),
        notes=(
            "a shared expert, scaled per token by sigmoid(shared_expert_gate), writes beside the routed experts",
            "layers in mlp_only_layers (or off the decoder_sparse_step) keep a dense MLP",
        ),
    )
)
_register(
    _llama_like(
        "qwen3_moe",
        "Qwen3MoeForCausalLM",
        attn_bias=_LLAMA_ATTENTION_BIAS,
        mlp_bias=BiasRule("never", reason=_NO_EXPERT_BIAS),
        extra_pre_norms=_PRE_NORMS,
        experts=_moe("mlp", "moe_intermediate_size", dense_layers=True),
        notes=("layers in mlp_only_layers (or off the decoder_sparse_step) keep a dense MLP",),
    )
)
_register(
    ArchSpec(
        model_type="phi3",
        causal_lm_class="Phi3ForCausalLM",
        layers="model.layers",
        attn=Writer("attn", "model.layers.{layer}.self_attn.o_proj", "out_in", BiasRule("never", reason=_NO_BIAS)),
        mlp=Writer("mlp", "model.layers.{layer}.mlp.down_proj", "out_in", BiasRule("never", reason=_NO_BIAS)),
        embeddings=("model.embed_tokens",),
        lm_head="lm_head",
        final_norm="model.norm",
        pre_norms=_PRE_NORMS,
        notes=("q/k/v are fused in qkv_proj and gate/up in gate_up_proj",),
    )
)
_register(
    ArchSpec(
        model_type="gpt2",
        causal_lm_class="GPT2LMHeadModel",
        layers="transformer.h",
        attn=Writer("attn", "transformer.h.{layer}.attn.c_proj", "in_out", BiasRule("always")),
        mlp=Writer("mlp", "transformer.h.{layer}.mlp.c_proj", "in_out", BiasRule("always")),
        embeddings=("transformer.wte", "transformer.wpe"),
        lm_head="lm_head",
        final_norm="transformer.ln_f",
        pre_norms=("transformer.h.{layer}.ln_1", "transformer.h.{layer}.ln_2"),
        hidden_key="n_embd",
        layers_key="n_layer",
        heads_key="n_head",
        kv_heads_key=None,
        head_dim_key=None,
        intermediate_key="n_inner",
        intermediate_default_multiple=4,
        tied_by_default=True,
        optional_prefix="transformer.",
        notes=("Conv1D stores weights as [in, out]", "token and position embeddings both write the residual stream"),
    )
)
_register(
    ArchSpec(
        model_type="gpt_neox",
        causal_lm_class="GPTNeoXForCausalLM",
        layers="gpt_neox.layers",
        attn=Writer(
            "attn",
            "gpt_neox.layers.{layer}.attention.dense",
            "out_in",
            BiasRule(
                "config_key",
                "attention_bias",
                ("gpt_neox.layers.{layer}.attention.query_key_value", "gpt_neox.layers.{layer}.attention.dense"),
            ),
        ),
        mlp=Writer("mlp", "gpt_neox.layers.{layer}.mlp.dense_4h_to_h", "out_in", BiasRule("always")),
        embeddings=("gpt_neox.embed_in",),
        lm_head="lm_head",
        final_norm="gpt_neox.final_layer_norm",
        pre_norms=("gpt_neox.layers.{layer}.input_layernorm", "gpt_neox.layers.{layer}.post_attention_layernorm"),
        head_dim_key=None,
        kv_heads_key=None,
        aliases=(("lm_head.weight", "embed_out.weight"),),
        parallel_residual_key="use_parallel_residual",
        notes=("with use_parallel_residual, attention and MLP both read the block input and add into the output",),
    )
)


# Families people ask for that the table leaves out, and why (one line each, in the refusal).
NOT_YET = {
    "gpt_oss": "its released checkpoints store the experts MXFP4-quantized and fused (blocks and scales per "
    "layer), which no exact float edit of a down projection can be written back into; dequantize to bf16 first "
    "and the checkpoint is still one fused tensor per layer with biases, which editor does not edit yet",
    "olmoe": "llama.cpp's OLMoE graph does not take grouped KV heads, and editor has no tiny-model proof of it yet",
}


def _wrapped(
    inner: ArchSpec, model_type: str, cls: str, *, auto_class: str, tied: bool, notes: tuple[str, ...]
) -> ArchSpec:
    """A multimodal checkpoint whose language model is ``inner``'s, under ``model.language_model`` in memory;
    on disk under that name or the older ``language_model.model`` (lm_head: ``language_model.lm_head``)."""

    def moved(path: str) -> str:
        return "model.language_model." + path.removeprefix("model.") if path.startswith("model.") else path

    def writer(w: Writer) -> Writer:
        bias = replace(w.bias, siblings=tuple(moved(s) for s in w.bias.siblings))
        norm = moved(w.output_norm) if w.output_norm else None
        return replace(w, module=moved(w.module), bias=bias, output_norm=norm)

    return replace(
        inner,
        model_type=model_type,
        causal_lm_class=cls,
        layers=moved(inner.layers),
        attn=writer(inner.attn),
        mlp=writer(inner.mlp),
        embeddings=tuple(moved(e) for e in inner.embeddings),
        final_norm=moved(inner.final_norm),
        pre_norms=tuple(moved(n) for n in inner.pre_norms),
        tied_by_default=tied,
        redeclare=None,
        text_config="text_config",
        text_model_types=(inner.model_type,),
        auto_class=auto_class,
        disk_prefixes=(("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")),
        notes=notes,
    )


_register(
    _wrapped(
        ARCHITECTURES["gemma3_text"],
        "gemma3",
        "Gemma3ForConditionalGeneration",
        auto_class="AutoModelForImageTextToText",
        tied=True,
        notes=("Gemma-3 4B and larger: the gemma3_text model under a vision tower; only its tensors are edited",),
    )
)
_register(
    _wrapped(
        ARCHITECTURES["llama"],
        "llava",
        "LlavaForConditionalGeneration",
        auto_class="AutoModelForImageTextToText",
        tied=False,
        notes=("LLaVA with a Llama language model; the vision tower and projector are copied byte for byte",),
    )
)


def supported_model_types() -> list[str]:
    return sorted(ARCHITECTURES)


def get_arch(model_type: str | None, where: str = "config.json") -> ArchSpec:
    if model_type in NOT_YET:
        raise EditorError(f"{where}: model_type {model_type!r} is not supported: {NOT_YET[model_type]}")
    spec = ARCHITECTURES.get(model_type or "")
    if spec is None:
        raise EditorError(
            f"{where}: unknown model_type {model_type!r}; supported model types: {', '.join(supported_model_types())}"
        )
    return spec
