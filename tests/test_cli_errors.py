"""Bad input: one line on stderr naming the problem and the fix, a non-zero exit, and no output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import build_model, save_model, tiny_configs


def wedit(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("wedit") or ""
    cmd = [exe, *args] if exe else [sys.executable, "-m", "editor.cli", *args]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)


@pytest.fixture(scope="module")
def tiny_llama(tiny_checkpoint) -> Path:
    return tiny_checkpoint("llama")


def write_plan(path: Path, edits: list) -> Path:
    path.write_text(json.dumps(edits))
    return path


def export_plan(tmp_path: Path, model: Path, edits: list) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `wedit export` of ``edits`` on ``model`` into tmp_path/out; return the result and that path."""
    plan = write_plan(tmp_path / "p.json", edits)
    out = tmp_path / "out"
    return wedit("export", "--model", str(model), "--plan", str(plan), "--out", str(out)), out


def assert_clean_failure(result: subprocess.CompletedProcess, out: Path, *needles: str) -> None:
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))


def test_missing_source(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(wedit("fetch", str(tmp_path / "nope"), "--out", str(out)), out, "does not exist", "pass a")


def test_missing_source_export(tmp_path):
    plan = write_plan(tmp_path / "p.json", [{"kind": "zero_heads", "layer": 0, "heads": [0]}])
    out = tmp_path / "out"
    assert_clean_failure(
        wedit("export", "--model", str(tmp_path / "nope"), "--plan", str(plan), "--out", str(out)),
        out,
        "does not exist",
    )


def test_unknown_model_type(tmp_path, tiny_llama):
    src = tmp_path / "weird"
    shutil.copytree(tiny_llama, src)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "bananallm"
    (src / "config.json").write_text(json.dumps(config))
    result, out = export_plan(tmp_path, src, [{"kind": "zero_heads", "layer": 0, "heads": [0]}])
    assert_clean_failure(result, out, "unknown model_type 'bananallm'", "llama", "gpt2", "olmo2")


def test_head_out_of_range(tmp_path, tiny_llama):
    result, out = export_plan(tmp_path, tiny_llama, [{"kind": "zero_heads", "layer": 1, "heads": [0, 4]}])
    assert_clean_failure(result, out, "head 4 is out of range", "4 attention heads")


def test_layer_out_of_range(tmp_path, tiny_llama):
    result, out = export_plan(tmp_path, tiny_llama, [{"kind": "zero_heads", "layer": 3, "heads": [0]}])
    assert_clean_failure(result, out, "layer 3 is out of range")


def test_vector_wrong_size(tmp_path, tiny_llama):
    result, out = export_plan(
        tmp_path, tiny_llama, [{"kind": "residual_add", "layer": 1, "site": "mlp", "vector": [0.1] * 31}]
    )
    assert_clean_failure(result, out, "31 entries", "hidden size is 32")


def test_nan_in_vector(tmp_path, tiny_llama):
    vector = [0.1] * 32
    vector[7] = float("nan")
    result, out = export_plan(
        tmp_path, tiny_llama, [{"kind": "residual_add", "layer": 1, "site": "mlp", "vector": vector}]
    )
    assert_clean_failure(result, out, "non-finite", "index 7")


def test_bad_plan_entry_is_named(tmp_path, tiny_llama):
    plan = write_plan(
        tmp_path / "p.json",
        [{"kind": "zero_heads", "layer": 0, "heads": [0]}, {"kind": "rank_one", "layer": 0, "site": "mlp", "u": "x"}],
    )
    out = tmp_path / "out"
    result = wedit("export", "--model", str(tiny_llama), "--plan", str(plan), "--out", str(out))
    assert_clean_failure(result, out, "entry 1 (rank_one)", "field u")


def test_refused_edit_says_why(tmp_path):
    src = save_model(build_model(tiny_configs()["gemma2"]), tmp_path / "gemma2")
    result, out = export_plan(
        tmp_path, src, [{"kind": "residual_add", "layer": 1, "site": "mlp", "vector": [0.1] * 32}]
    )
    assert_clean_failure(result, out, "post_feedforward_layernorm", "normalises")


def test_existing_output_needs_force(tmp_path, tiny_llama):
    plan = write_plan(tmp_path / "p.json", [{"kind": "zero_heads", "layer": 0, "heads": [0]}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = wedit("export", "--model", str(tiny_llama), "--plan", str(plan), "--out", str(out))
    assert result.returncode != 0 and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"
    result = wedit("export", "--model", str(tiny_llama), "--plan", str(plan), "--out", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_pickle_checkpoint_refused(tmp_path):
    src = tmp_path / "old"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04")
    result, out = export_plan(tmp_path, src, [{"kind": "zero_heads", "layer": 0, "heads": [0]}])
    assert_clean_failure(result, out, "pickle", "save_pretrained")


def test_hub_id_offline(tmp_path):
    out = tmp_path / "out"
    result = wedit("fetch", "no-such-org/no-such-model", "--out", str(out))
    assert_clean_failure(result, out, "no-such-org/no-such-model", "local directory")


def test_archs_prints_matrix():
    result = wedit("archs")
    assert result.returncode == 0, result.stderr
    for model_type in (
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gemma3_text",
        "gpt2",
        "phi3",
        "gpt_neox",
        "olmo2",
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "gemma3",
        "llava",
    ):
        assert model_type in result.stdout
    markdown = wedit("archs", "--markdown").stdout
    assert markdown.count("\n| ") == 15
    assert "refused: model.layers.N.post_feedforward_layernorm normalises the mlp output" in markdown
