"""Acceptance: a llama.cpp control vector for the built-in model imports, exports and serves in stock vLLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from editor.io.checkpoint import Checkpoint
from editor.io.sources import DEFAULT_BUILTIN
from editor.methods.import_vectors import read_vectors, write_llamacpp_gguf
from editor.pipeline.verify import PROBE_PROMPTS, probe_batch
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow


def test_control_vector_roundtrip(tmp_path, smollm2_dir):
    rng = np.random.default_rng(7)
    vectors = {}
    for layer in range(10, 21):
        v = rng.standard_normal(576).astype(np.float32)
        vectors[layer] = 1.5 * v / np.linalg.norm(v)
    gguf = write_llamacpp_gguf(tmp_path / "smollm2-cv.gguf", vectors, "llama")
    plan = tmp_path / "plan.json"
    result = wedit("import-vectors", str(gguf), "--model", DEFAULT_BUILTIN, "--scale", "0.8", "--out", str(plan))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "smollm2-cv"
    result = wedit("export", "--model", DEFAULT_BUILTIN, "--plan", str(plan), "--out", str(out))
    assert result.returncode == 0, result.stderr

    # llama.cpp's own semantics (add after block N) on the untouched model vs the baked export
    info = Checkpoint.open(smollm2_dir).info()
    batch = probe_batch(out, PROBE_PROMPTS)
    mask = batch["attention_mask"].bool()
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(**batch).logits
        handles = read_vectors(gguf).hook(base, info, scale=0.8)
        try:
            steered = base(**batch).logits
        finally:
            for h in handles:
                h.remove()
    baked = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        got = baked(**batch).logits
    err = float((steered - got).abs()[mask].max())
    effect = float((steered - plain).abs()[mask].max())
    print(
        f"\ncontrol vector: llama.cpp-style hook vs bf16 export max logit error {err:.3e}; steering moved logits by {effect:.2f}"
    )
    assert effect > 0.5 and err <= 2e-2

    result = wedit("verify", str(out), "--vllm")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert manifest["verification"]["vllm"]["identical"] >= 7
