"""Tiny random-weight models of every supported architecture, built in-process (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

VOCAB = 96
IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    **IDS,
)


VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16
)


def auto_class(config: T.PretrainedConfig):
    """The transformers Auto class the architecture table names for this model type (a wrapper's is not the
    causal-LM one)."""
    from editor.core.architectures import get_arch

    return getattr(T, get_arch(config.model_type).auto_class)


def tiny_configs() -> dict[str, T.PretrainedConfig]:
    """One config per case; the key is a test id, the config's model_type says the architecture."""
    return {
        "llama": T.LlamaConfig(**LLAMA_LIKE, tie_word_embeddings=False),
        # SmolLM2 is a tied Llama: the ablation path must untie it.
        "llama-tied": T.LlamaConfig(**LLAMA_LIKE, tie_word_embeddings=True),
        "mistral": T.MistralConfig(**LLAMA_LIKE, sliding_window=None),
        "qwen2": T.Qwen2Config(**LLAMA_LIKE, tie_word_embeddings=True),
        "qwen3": T.Qwen3Config(**LLAMA_LIKE, head_dim=8, tie_word_embeddings=False),
        "gemma2": T.Gemma2Config(**LLAMA_LIKE, head_dim=8),
        "gemma3_text": T.Gemma3TextConfig(**LLAMA_LIKE, head_dim=8),
        "phi3": T.Phi3Config(**LLAMA_LIKE),
        "olmo2": T.Olmo2Config(**LLAMA_LIKE),
        # Mixtures of experts: every MLP routed (Mixtral); a shared expert and a dense layer 1 (Qwen2-MoE); q/k norms
        # and routed experts narrower than the dense width (Qwen3-MoE).
        "mixtral": T.MixtralConfig(**LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2, sliding_window=None),
        "qwen2_moe": T.Qwen2MoeConfig(
            **LLAMA_LIKE,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=24,
            shared_expert_intermediate_size=40,
            mlp_only_layers=[1],
            tie_word_embeddings=False,
        ),
        "qwen3_moe": T.Qwen3MoeConfig(
            **LLAMA_LIKE,
            head_dim=8,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=24,
            norm_topk_prob=True,
        ),
        # Multimodal wrappers: a language model of a dense family under a tiny vision tower and projector.
        "gemma3": T.Gemma3Config(
            text_config=T.Gemma3TextConfig(**LLAMA_LIKE, head_dim=8).to_dict(),
            vision_config=T.SiglipVisionConfig(**VISION, vision_use_head=False).to_dict(),
            mm_tokens_per_image=4,
            image_token_index=VOCAB - 1,
            boi_token_index=VOCAB - 3,
            eoi_token_index=VOCAB - 2,
        ),
        "llava": T.LlavaConfig(
            text_config=T.LlamaConfig(**LLAMA_LIKE, tie_word_embeddings=False).to_dict(),
            vision_config=T.CLIPVisionConfig(**VISION, projection_dim=16).to_dict(),
            image_token_index=VOCAB - 1,
            vision_feature_layer=-1,
        ),
        "gpt2": T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, **IDS),
        "gpt_neox": T.GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=64,
            use_parallel_residual=True,
            **IDS,
        ),
        "gpt_neox-sequential": T.GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=64,
            use_parallel_residual=False,
            attention_bias=False,
            **IDS,
        ),
    }


COUNTRY_WORDS = ("Italy", "Peru", "Chile", "Japan")


def tiny_tokenizer():
    """A word-level tokenizer whose 96 entries match the tiny models' vocabulary (a few country names among them;
    any other word reads as <unk>, so every text tokenizes)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", *COUNTRY_WORDS] + [f"w{i}" for i in range(VOCAB - 4 - len(COUNTRY_WORDS))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    assert len(tok) == VOCAB
    return tok


CHARACTERS = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'\"!?-:;()&/"


def char_tokenizer():
    """A character-level tokenizer within the tiny models' 96 ids: every word is its own string of ids, so two
    groups' names give two different prompts (the word-level one reads both as <unk>)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *CHARACTERS])}
    assert len(vocab) <= VOCAB
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_model(config: T.PretrainedConfig, seed: int = 0) -> torch.nn.Module:
    """A model whose weights are large enough that a wrong bake shows up far above fp32 noise."""
    torch.manual_seed(seed)
    model = auto_class(config).from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.15)
    return model.eval()


def save_model(model: torch.nn.Module, path: Path) -> Path:
    model.save_pretrained(path)
    return path


def probe_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch of three prompts of different lengths."""
    g = torch.Generator().manual_seed(123)
    lengths = [11, 7, 4]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, :n] = 1
    return ids, mask


@torch.no_grad()
def logits(model: torch.nn.Module) -> torch.Tensor:
    ids, mask = probe_batch()
    out = model(input_ids=ids, attention_mask=mask).logits
    return out * mask.unsqueeze(-1)  # padded positions are not compared
