"""Mixtures of experts in the stock engines (slow: borrows the built-in SmolLM2's tokenizer, which vLLM and the
GGUF converter need): a tiny random checkpoint of each MoE family, edited in its experts, its heads and every
writer, exported, served by vLLM's CPU backend (`wedit verify --vllm`, fp32) and converted to GGUF and run in
llama.cpp, each against transformers on the same export.

The tiny models have 2 heads of size 32: vLLM's CPU attention has no kernel for heads of 16. The Qwen3-MoE sets
norm_topk_prob, as the released checkpoints do (llama.cpp's graph always renormalises; see gguf_rules).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.test_cli_errors import wedit
from tests.test_gguf_archs import ENGINE_SIZED, HIDDEN, _vector, llama_cpp_agreement, served_export

pytestmark = pytest.mark.slow
FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")


def _config(family: str):
    import transformers as T

    common = dict(ENGINE_SIZED, num_experts_per_tok=2)
    if family == "mixtral":
        return T.MixtralConfig(**common, num_local_experts=4, sliding_window=None)
    if family == "qwen2_moe":
        moe = dict(moe_intermediate_size=64, shared_expert_intermediate_size=128, use_sliding_window=False)
        return T.Qwen2MoeConfig(**common, num_experts=4, **moe)
    return T.Qwen3MoeConfig(**common, num_experts=4, moe_intermediate_size=64, norm_topk_prob=True)


def _plan(family: str) -> list[dict]:
    rng = np.random.default_rng(3)

    width = 128 if family == "mixtral" else 64
    plan = [
        {"kind": "scale_experts", "layer": 0, "experts": [1], "scale": 0.0},
        {
            "kind": "rank_one",
            "layer": 1,
            "site": "mlp",
            "expert": 2,
            "u": _vector(rng, HIDDEN, 2),
            "v": _vector(rng, width, 1),
        },
        {"kind": "zero_heads", "layer": 1, "heads": [1]},
        {"kind": "ablate_direction", "direction": _vector(rng, HIDDEN, 1), "layers": [0]},
    ]
    if family == "qwen2_moe":
        plan.append({"kind": "scale_experts", "layer": 1, "experts": ["shared", 0], "scale": 0.5})
    return plan


@pytest.fixture(scope="module", params=FAMILIES)
def export(request, smollm2_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp(request.param)
    config, plan = _config(request.param), _plan(request.param)
    yield request.param, served_export(config, plan, work, smollm2_dir, f"tiny-{request.param}")
    shutil.rmtree(work, ignore_errors=True)


def test_vllm_serves_the_export_as_transformers_does(export):
    family, out = export
    result = wedit("verify", str(out), "--vllm", "--max-new-tokens", "8")
    print("\n" + result.stdout[-1500:])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    verification = json.loads((out / "editor_manifest.json").read_text())["verification"]
    tf, vl = verification["transformers"], verification["vllm"]
    assert tf["passed"] and tf["max_logit_error"] <= 1e-4, tf  # the export equals the hooked base
    assert vl["prompts"] == 8 and vl["identical"] == 8, (family, vl)


def test_llama_cpp_runs_the_gguf_as_transformers_does(export):
    family, out = export
    same, diff, arch = llama_cpp_agreement(out, 8)
    assert same == 8 and diff < 1e-2
    assert arch == {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe"}[family]
