"""Acceptance on the built-in model: export, verify in transformers and stock vLLM, diff, push dry run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from editor.io.sources import DEFAULT_BUILTIN
from tests.test_cli_errors import wedit, write_plan

pytestmark = pytest.mark.slow
ZEROED = {3: [0, 5], 20: [7]}
STEER_LAYER = 15


@pytest.fixture(scope="module")
def export(tmp_path_factory, smollm2_dir):
    work = tmp_path_factory.mktemp("serve")
    vector = torch.randn(576, generator=torch.Generator().manual_seed(0))
    plan = [{"kind": "zero_heads", "layer": layer, "heads": heads} for layer, heads in ZEROED.items()]
    plan.append(
        {"kind": "residual_add", "layer": STEER_LAYER, "site": "mlp", "vector": (4.0 * vector / vector.norm()).tolist()}
    )
    out = work / "smollm2-edited"
    result = wedit(
        "export", "--model", DEFAULT_BUILTIN, "--plan", str(write_plan(work / "plan.json", plan)), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    yield out
    shutil.rmtree(work, ignore_errors=True)  # CI's disk holds the module folders of a whole session otherwise


def test_verify_transformers_and_vllm(export):
    result = wedit("verify", str(export), "--vllm")
    print("\n" + result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((export / "editor_manifest.json").read_text())
    tf, vl = manifest["verification"]["transformers"], manifest["verification"]["vllm"]
    assert tf["passed"] and tf["max_logit_error"] <= 2e-2 and tf["mean_first_token_kl"] < 1e-3
    assert vl["prompts"] == 8 and vl["identical"] >= 7
    assert len(vl["continuations"]) == 8
    card = (export / "README.md").read_text()
    assert f"{vl['identical']} of 8 greedy" in card


def test_diff_against_base_names_heads_and_bias(export):
    result = wedit("diff", DEFAULT_BUILTIN, str(export), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["head_summary"] == ["layer 3: heads 0, 5 zeroed", "layer 20: head 7 zeroed"]
    changed = [t for t in report["tensors"] if t["status"] == "changed"]
    assert sorted(t["name"] for t in changed) == [f"model.layers.{i}.self_attn.o_proj.weight" for i in (20, 3)]
    assert all(t["only_zeroed_heads"] for t in changed)
    nonzero_added = [t for t in report["tensors"] if t["status"] == "added" and not t["all_zero"]]
    assert [t["name"] for t in nonzero_added] == [f"model.layers.{STEER_LAYER}.mlp.down_proj.bias"]
    assert abs(nonzero_added[0]["delta_norm"] - 4.0) < 0.05
    assert report["config"] == {"mlp_bias": [False, True]}
    assert report["unexplained"] == []
    assert "layer 3: heads 0, 5 zeroed" in wedit("diff", DEFAULT_BUILTIN, str(export)).stdout


def test_diff_with_itself_is_empty(export):
    result = wedit("diff", str(export), str(export), "--json")
    assert json.loads(result.stdout)["identical"] is True


def test_push_dry_run_lists_files(export):
    result = wedit("push", str(export), "--repo", "someone/smollm2-edited", "--dry-run")
    assert result.returncode == 0, result.stderr
    for name in ("README.md", "editor_manifest.json", "config.json", "model.safetensors.index.json", "tokenizer.json"):
        assert name in result.stdout
