"""Imported control vectors: the source tool's run-time add equals the baked export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM

from editor.core.capabilities import capability
from editor.core.plan import Plan
from editor.errors import EditorError, RefusedEdit
from editor.io.checkpoint import Checkpoint
from editor.methods.import_vectors import read_vectors, write_llamacpp_gguf
from editor.pipeline.export import export_checkpoint
from tests.test_cli_errors import assert_clean_failure, wedit
from tests.tiny import auto_class, build_model, logits, save_model, tiny_configs

CASES = tiny_configs()


def random_vectors(layers, size, seed=0, norm=2.0):
    g = np.random.default_rng(seed)
    out = {}
    for layer in layers:
        v = g.standard_normal(size).astype(np.float32)
        out[layer] = norm * v / np.linalg.norm(v)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_gguf_hook_equals_bake(case, tmp_path):
    config = CASES[case]
    model = build_model(config)
    base = save_model(model, tmp_path / "base")
    info = Checkpoint.open(base).info()
    path = write_llamacpp_gguf(tmp_path / "cv.gguf", random_vectors([1, 2], info.hidden_size), info.arch.model_type)
    vectors = read_vectors(path)
    edits = vectors.to_edits(info, scale=0.8)
    if capability(info.arch, "residual_add mlp").status == "refused":
        with pytest.raises(RefusedEdit):
            export_checkpoint(base, Plan(edits=edits), tmp_path / "out", progress=False)
        return
    handles = vectors.hook(model, info, scale=0.8)
    try:
        expected = logits(model)
    finally:
        for h in handles:
            h.remove()
    export_checkpoint(base, Plan(edits=edits), tmp_path / "out", progress=False)
    got = logits(auto_class(config).from_pretrained(tmp_path / "out", dtype=torch.float32).eval())
    assert float((expected - logits(model)).abs().max()) > 1e-3
    assert float((expected - got).abs().max()) <= 1e-4


@pytest.mark.parametrize("case", ["llama", "gpt2", "qwen3"])
def test_safetensors_attn_site_with_sign(case, tmp_path):
    model = build_model(CASES[case])
    base = save_model(model, tmp_path / "base")
    info = Checkpoint.open(base).info()
    vectors = random_vectors([0, 2], info.hidden_size, seed=3)
    save_file({f"layer.{i}": v for i, v in vectors.items()}, tmp_path / "v.safetensors")
    (tmp_path / "v.json").write_text(json.dumps({"site": "attn", "sign": -1}))
    imported = read_vectors(tmp_path / "v.safetensors")
    assert np.allclose(imported.vectors[2], -vectors[2])
    handles = imported.hook(model, info)
    try:
        expected = logits(model)
    finally:
        for h in handles:
            h.remove()
    export_checkpoint(base, Plan(edits=imported.to_edits(info)), tmp_path / "out", progress=False)
    got = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval())
    assert float((expected - got).abs().max()) <= 1e-4


@pytest.fixture(scope="module")
def tiny_llama(tiny_checkpoint):
    return tiny_checkpoint("llama")


def _import(tmp_path, tiny_llama, vector_file, *extra):
    out = tmp_path / "plan.json"
    return wedit("import-vectors", str(vector_file), "--model", str(tiny_llama), "--out", str(out), *extra), out


def test_cli_writes_plan_with_range_and_scale(tmp_path, tiny_llama):
    path = write_llamacpp_gguf(tmp_path / "cv.gguf", random_vectors([1, 2], 32), "llama")
    result, out = _import(tmp_path, tiny_llama, path, "--scale", "0.5", "--layers", "2-2")
    assert result.returncode == 0, result.stderr
    plan = json.loads(out.read_text())
    assert [(e["layer"], e["site"], e["scale"]) for e in plan["edits"]] == [(2, "mlp", 0.5)]


@pytest.mark.parametrize(
    "problem, needle",
    [
        ("hidden", "hidden size is 32"),
        ("layer", "outside the model"),
        ("nan", "non-finite"),
        ("inf", "non-finite"),
        ("hint", "made for model type 'gpt2'"),
        ("zero", "direction.0 is invalid"),
        ("range", "no vectors in layers 5-9"),
    ],
)
def test_bad_vectors_one_line_error(problem, needle, tmp_path, tiny_llama):
    vectors = random_vectors([1, 2], 32)
    hint = "llama"
    extra = []
    if problem == "hidden":
        vectors = random_vectors([1], 31)
    elif problem == "layer":
        vectors = random_vectors([1, 3], 32)
    elif problem == "nan":
        vectors[2][5] = np.nan
    elif problem == "inf":
        vectors[1][0] = np.inf
    elif problem == "hint":
        hint = "gpt2"
    elif problem == "range":
        extra = ["--layers", "5-9"]
    path = tmp_path / "cv.gguf"
    if problem == "zero":
        from gguf import GGUFWriter

        writer = GGUFWriter(str(path), "controlvector")
        writer.add_tensor("direction.0", np.ones(32, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    else:
        write_llamacpp_gguf(path, vectors, hint)
    result, out = _import(tmp_path, tiny_llama, path, *extra)
    assert_clean_failure(result, out, needle)


def test_not_a_control_vector(tmp_path, tiny_llama):
    path = tmp_path / "model.gguf"
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result, out = _import(tmp_path, tiny_llama, path)
    assert_clean_failure(result, out, "not 'controlvector'")


def test_safetensors_without_sidecar(tmp_path, tiny_llama):
    save_file({"layer.1": np.ones(32, dtype=np.float32)}, tmp_path / "v.safetensors")
    result, out = _import(tmp_path, tiny_llama, tmp_path / "v.safetensors")
    assert_clean_failure(result, out, "sidecar")


def test_library_errors_are_editor_errors(tmp_path):
    with pytest.raises(EditorError, match="not found"):
        read_vectors(tmp_path / "missing.gguf")
