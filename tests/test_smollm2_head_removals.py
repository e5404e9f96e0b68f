"""Acceptance on the built-in model: mean_heads and scale_heads baked into bf16 SmolLM2, verified in transformers
and in stock vLLM, and named by `wedit diff`.

vLLM's start-up is the cost (about two minutes on a CPU), so both kinds share one export that goes through
`wedit verify --vllm`; each kind is also exported alone and verified in transformers, so a kind that is wrong
on its own cannot hide behind the other.
"""

from __future__ import annotations

import json

import pytest
import torch

from editor.data import wikitext_txt
from editor.engines.loading import load_model, load_tokenizer
from editor.io.checkpoint import Checkpoint
from editor.io.sources import DEFAULT_BUILTIN
from editor.methods.attribute.ksweep import wikitext_tail
from editor.methods.attribute.removal import head_means
from tests.test_cli_errors import wedit, write_plan

pytestmark = pytest.mark.slow
MEAN = {23: [4, 7], 27: [1]}  # heads BiasScope ranks high for always_late
SCALE = {27: [0], 29: [2]}


@pytest.fixture(scope="module")
def plans(smollm2_dir) -> dict[str, list[dict]]:
    torch.set_num_threads(1)
    model, info = load_model(smollm2_dir), Checkpoint.open(smollm2_dir).info()
    means = head_means(model, info, wikitext_tail(load_tokenizer(smollm2_dir), wikitext_txt(None), 512))
    mean = [
        {"kind": "mean_heads", "layer": layer, "heads": heads, "means": [means[layer, h].tolist() for h in heads]}
        for layer, heads in MEAN.items()
    ]
    scale = [{"kind": "scale_heads", "layer": layer, "heads": heads, "scale": 0.5} for layer, heads in SCALE.items()]
    return {"mean": mean, "scale": scale, "both": mean + scale}


def export(plan: list[dict], work, name: str):
    out = work / name
    result = wedit(
        "export", "--model", DEFAULT_BUILTIN, "--plan", str(write_plan(work / f"{name}.json", plan)), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("kind", ["mean", "scale"])
def test_each_kind_alone_verifies_in_transformers(plans, kind, tmp_path):
    out = export(plans[kind], tmp_path, f"smollm2-{kind}")
    result = wedit("verify", str(out))
    print("\n" + result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    tf = json.loads((out / "editor_manifest.json").read_text())["verification"]["transformers"]
    assert tf["passed"] and tf["stored_dtype"] == "bfloat16" and tf["mean_first_token_kl"] < 1e-3


def test_both_kinds_verify_in_transformers_and_stock_vllm(plans, tmp_path):
    out = export(plans["both"], tmp_path, "smollm2-mean-scale")
    manifest = json.loads((out / "editor_manifest.json").read_text())
    # The means travel inline in the plan the manifest records, so the manifest alone rebuilds the export.
    recorded = [e for e in manifest["plan"] if e["kind"] == "mean_heads"]
    assert [e["means"] for e in recorded] == [e["means"] for e in plans["mean"]]
    assert manifest["config_updates"] == {"attention_bias": True}

    result = wedit("verify", str(out), "--vllm")
    print("\n" + result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads((out / "editor_manifest.json").read_text())["verification"]
    tf, vl = checks["transformers"], checks["vllm"]
    assert tf["passed"] and tf["max_logit_error"] <= 1e-3  # zeroed and halved columns, float32 bias: no rounding
    assert vl["prompts"] == 8 and vl["identical"] == 8

    report = json.loads(wedit("diff", DEFAULT_BUILTIN, str(out), "--json").stdout)
    assert report["head_summary"] == [
        "layer 23: heads 4, 7 mean-ablated",
        "layer 27: head 1 mean-ablated",
        "layer 27: head 0 scaled by 0.5",
        "layer 29: head 2 scaled by 0.5",
    ]
    assert report["unexplained"] == []
    card = (out / "README.md").read_text()
    assert "layer 23: attention heads 4, 7 mean-ablated" in card and "mean-ablated heads, scaled heads" in card
