"""Hostile conditions: damaged inputs, a killed export, unwritable outputs. Inputs never change."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.test_cli_errors import assert_clean_failure, wedit, write_plan
from tests.tiny import build_model, tiny_configs


def tree_hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture
def tiny(tmp_path, tiny_checkpoint) -> Path:
    """A copy of the tiny llama: these tests damage their base."""
    return Path(shutil.copytree(tiny_checkpoint("llama"), tmp_path / "base"))


@pytest.fixture
def plan(tmp_path) -> Path:
    return write_plan(tmp_path / "plan.json", [{"kind": "zero_heads", "layer": 1, "heads": [0]}])


def test_truncated_shard(tmp_path, tiny, plan):
    shard = tiny / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    before = tree_hashes(tiny)
    out = tmp_path / "out"
    result = wedit("export", "--model", str(tiny), "--plan", str(plan), "--out", str(out))
    assert_clean_failure(result, out, "truncated", "re-download")
    assert tree_hashes(tiny) == before


def test_index_names_missing_file(tmp_path, plan):
    base = tmp_path / "sharded"
    build_model(tiny_configs()["llama"]).save_pretrained(base, max_shard_size="20KB")
    index = json.loads((base / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (base / victim).unlink()
    before = tree_hashes(base)
    out = tmp_path / "out"
    result = wedit("export", "--model", str(base), "--plan", str(plan), "--out", str(out))
    assert_clean_failure(result, out, victim, "missing")
    assert tree_hashes(base) == before


def test_existing_output_untouched(tmp_path, tiny, plan):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    before = tree_hashes(tiny)
    result = wedit("export", "--model", str(tiny), "--plan", str(plan), "--out", str(out))
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1 and "--force" in result.stderr
    assert tree_hashes(out) == {"mine.txt": hashlib.sha256(b"keep").hexdigest()}
    assert tree_hashes(tiny) == before


def _make_readonly(path: Path) -> bool:
    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    # root ignores permission bits; the immutable attribute stops root too
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def _undo_readonly(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_readonly_output_directory(tmp_path, tiny, plan):
    parent = tmp_path / "locked"
    parent.mkdir()
    if not _make_readonly(parent):
        pytest.skip("cannot make a read-only directory here (no chattr)")
    try:
        out = parent / "out"
        before = tree_hashes(tiny)
        result = wedit("export", "--model", str(tiny), "--plan", str(plan), "--out", str(out))
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write into" in lines[0] and "writable --out" in lines[0], result.stderr
        assert list(parent.iterdir()) == []
        assert tree_hashes(tiny) == before
    finally:
        _undo_readonly(parent)


def _big_checkpoint(path: Path) -> Path:
    """About 400 MB of fp32 Llama weights in 40 MB shards: slow enough to kill mid-export."""
    config = dict(tiny_configs()["llama"].to_dict())
    config.update(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=128,  # the tiny config's head_dim (8) would not fit these 1024-wide projections
        vocab_size=256,
    )
    config.pop("dtype", None)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    h, f, layers = 1024, 4096, 6
    shapes = {"model.embed_tokens.weight": (256, h), "model.norm.weight": (h,), "lm_head.weight": (256, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (h, h),
            p + "self_attn.v_proj.weight": (h, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    weight_map, shard, used, files = {}, {}, 0, []

    def flush():
        nonlocal shard, used
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, path / name, metadata={"format": "pt"})
        files.append(name)
        weight_map.update(dict.fromkeys(shard, name))
        shard, used = {}, 0

    g = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        shard[name] = torch.randn(shape, generator=g) * 0.02
        used += shard[name].numel() * 4
        if used > 40e6:
            flush()
    if shard:
        flush()
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def test_kill_during_export_leaves_no_output(tmp_path):
    base = _big_checkpoint(tmp_path / "big")
    plan = write_plan(tmp_path / "plan.json", [{"kind": "ablate_direction", "direction": [1.0] + [0.0] * 1023}])
    before = tree_hashes(base)
    out = tmp_path / "out"
    exe = shutil.which("wedit")
    cmd = [exe] if exe else [sys.executable, "-m", "editor.cli"]
    proc = subprocess.Popen(
        [*cmd, "export", "--model", str(base), "--plan", str(plan), "--out", str(out)], stderr=subprocess.DEVNULL
    )
    partial = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(tmp_path.glob(".out.partial-*"))
        if found and any(f.suffix == ".safetensors" for f in found[0].iterdir()):
            partial = found[0]
            break
        time.sleep(0.05)
    assert partial is not None, "export finished before it could be killed; make the checkpoint bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert tree_hashes(base) == before

    result = wedit("export", "--model", str(base), "--plan", str(plan), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "editor_manifest.json").is_file()
    assert not partial.exists(), "the rerun should clear the dead build"
    assert tree_hashes(base) == before
