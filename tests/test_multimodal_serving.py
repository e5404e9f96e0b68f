"""Multimodal wrappers in llama.cpp (slow: borrows the built-in SmolLM2's tokenizer, which the converter needs): a
tiny random Gemma-3 and LLaVA, edited in their language models, verified against the hooked base in
transformers, converted by `wedit gguf` (the text model; the vision tower stays in the safetensors export) and
run in llama.cpp against transformers on the same export.

vLLM is not run here: it imports torchvision for every vision model, and this project's environment has none
(the only torchvision wheel its registry offers is a CUDA build, which breaks importing transformers on a CPU).
`wedit verify --vllm` says so in one line (tested below) and serves the text with no image limit otherwise.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.test_cli_errors import wedit
from tests.test_gguf_archs import ENGINE_SIZED, HIDDEN, VOCAB, _vector, llama_cpp_agreement, served_export

pytestmark = pytest.mark.slow


def _config(family: str):
    import transformers as T

    text = dict(ENGINE_SIZED, head_dim=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    if family == "gemma3":  # llama.cpp fixes Gemma-3's 5-sliding/1-full pattern: 2 layers are both sliding
        return T.Gemma3Config(
            text_config=T.Gemma3TextConfig(**text, query_pre_attn_scalar=32).to_dict(),
            vision_config=T.SiglipVisionConfig(**vision, patch_size=16, vision_use_head=False).to_dict(),
            mm_tokens_per_image=4,
            boi_token_index=VOCAB - 3,
            eoi_token_index=VOCAB - 2,
            image_token_index=VOCAB - 1,
        )
    return T.LlavaConfig(
        text_config=T.LlamaConfig(**text, tie_word_embeddings=False).to_dict(),
        vision_config=T.CLIPVisionConfig(**vision, patch_size=16, projection_dim=32).to_dict(),
        image_token_index=VOCAB - 1,
        vision_feature_layer=-1,
    )


def _plan(family: str) -> list[dict]:
    rng = np.random.default_rng(5)

    plan = [
        {"kind": "zero_heads", "layer": 0, "heads": [1]},
        {"kind": "rank_one", "layer": 1, "site": "mlp", "u": _vector(rng, HIDDEN, 2), "v": _vector(rng, 128, 1)},
    ]
    if family == "llava":  # a residual add (a new o_proj bias, text_config.attention_bias) and an ablation
        plan += [
            {"kind": "residual_add", "layer": 1, "site": "attn", "vector": _vector(rng, HIDDEN, 3)},
            {"kind": "ablate_direction", "direction": _vector(rng, HIDDEN, 1), "layers": [0]},
        ]
    return plan


@pytest.fixture(scope="module", params=["gemma3", "llava"])
def export(request, smollm2_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp(request.param)
    config, plan = _config(request.param), _plan(request.param)
    yield request.param, served_export(config, plan, work, smollm2_dir, f"tiny-{request.param}")
    shutil.rmtree(work, ignore_errors=True)


def test_the_export_equals_the_hooked_base_and_runs_in_llama_cpp(export):
    family, out = export
    result = wedit("verify", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    same, diff, arch = llama_cpp_agreement(out, 8)
    assert same == 8 and diff < 1e-2
    assert arch == {"gemma3": "gemma3", "llava": "llama"}[family]


def test_verify_vllm_names_what_a_vision_model_needs(export):
    import importlib.util

    _family, out = export
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: vLLM can load the vision tower")
    result = wedit("verify", str(out), "--vllm")
    assert result.returncode != 0
    assert "only with torchvision" in result.stderr and result.stderr.count("\n") == 1
