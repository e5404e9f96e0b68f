"""Mixtures of experts end to end on tiny random models: BiasScope scores experts beside heads, and an expert
removal exports, verifies against the hooked model and diffs by name."""

from __future__ import annotations

import json

import pytest

from editor.edits import ScaleExperts
from tests.test_cli_errors import wedit


@pytest.fixture(scope="module")
def attributed(tiny_checkpoint, tmp_path_factory):
    base = tiny_checkpoint("qwen2_moe", tokenizer=True)
    out = tmp_path_factory.mktemp("moe") / "attribute"
    small = ("--k-max", "2", "--wiki-tokens", "64", "--mean-tokens", "64", "--seeds", "2", "--questions", "20")
    result = wedit(
        "attribute", "--model", str(base), "--bias", "always_late", *small, "--eval-questions", "5",
        "--removals", "zero", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return base, out, result.stdout


def test_attribute_prints_expert_scores_beside_the_heads(attributed):
    _base, out, stdout = attributed
    heads_line, experts_line = stdout.splitlines()[:2]
    assert heads_line.startswith("always_late: ") and "heads" in heads_line
    assert experts_line.startswith("always_late: top experts by contrastive direct effect: L")
    (bias,) = json.loads((out / "summary.json").read_text())["biases"]
    top = bias["top_experts"]
    assert top and all(e["layer"] != 1 for e in top), "layer 1 is dense (mlp_only_layers): no experts to score"
    scores = [e["score"] for e in top]
    assert scores == sorted(scores, reverse=True)
    attribution = json.loads((out / "always_late.attribution.json").read_text())
    assert len(attribution["expert_scores"]) == 3 and len(attribution["expert_scores"][0]) == 4
    assert attribution["expert_points"], "the expert removal sweep scored no point"


def test_an_expert_removal_exports_verifies_and_diffs(attributed, tmp_path):
    base, _out, _ = attributed
    (bias,) = json.loads((_out / "summary.json").read_text())["biases"]
    first, second = bias["top_experts"][:2]
    plan = [
        ScaleExperts(layer=first["layer"], experts=[first["expert"]]).model_dump(),
        ScaleExperts(layer=second["layer"], experts=[second["expert"], "shared"], scale=0.5).model_dump(),
    ]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    export = tmp_path / "export"
    result = wedit("export", "--model", str(base), "--plan", str(tmp_path / "plan.json"), "--out", str(export))
    assert result.returncode == 0, result.stderr[-2000:]
    result = wedit("verify", str(export))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    result = wedit("diff", str(base), str(export))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"expert {first['expert']} of layer {first['layer']} removed (zeroed)" in result.stdout
    assert f"the shared expert of layer {second['layer']} scaled by 0.5" in result.stdout
    assert "every change is explained by a recorded edit" in result.stdout
    card = (export / "README.md").read_text()
    assert f"layer {first['layer']}: expert {first['expert']} removed" in card


def test_a_fit_of_dense_mlps_refuses_an_moe_layer_in_one_line(tiny_checkpoint, tmp_path):
    base = tiny_checkpoint("mixtral", tokenizer=True)
    result = wedit(
        "fit", "unlink_mlp", "--model", str(base), "--layers", "1", "--steps", "1", "--out", str(tmp_path / "f")
    )
    last = result.stderr.strip().splitlines()[-1]  # after the model's loading progress
    assert result.returncode == 2 and last.startswith("wedit: error: "), result.stderr[-2000:]
    assert "layer 1 of this mixtral model is a mixture of experts" in last and "Traceback" not in result.stderr
    assert not (tmp_path / "f").exists()
    # The way out the message names: the same fit on attention's output projection only.
    args = ["--layers", "1", "--sites", "attn", "--steps", "1", "--test-pairs", "5", "--test-items", "8"]
    result = wedit("fit", "unlink_mlp", "--model", str(base), *args, "--out", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr[-2000:]
    edits = json.loads((tmp_path / "a" / "plan.json").read_text())["edits"]
    assert edits and {(e["kind"], e["layer"], e["site"]) for e in edits} == {("rank_one", 1, "attn")}
