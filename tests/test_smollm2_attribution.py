"""Acceptance: BiasScope on the built-in model, baked, verified in vLLM, and lowering the bias on a real country."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.data.biases import get_preset
from editor.io.sources import DEFAULT_BUILTIN
from editor.methods.attribute.pairs import load_pairs
from editor.methods.attribute.pipeline import PromptEncoder, stereotype_gap
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow


def test_attribute_export_verify_lowers_gap(tmp_path, smollm2_dir):
    run = tmp_path / "attribute"
    result = wedit("attribute", "--model", DEFAULT_BUILTIN, "--bias", "always_late", "--out", str(run))
    print("\n" + result.stdout)
    assert result.returncode == 0, result.stderr
    for name in (
        "plan.json",
        "summary.json",
        "always_late.heatmap.png",
        "always_late.k_curve.png",
        "always_late.attribution.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    (bias,) = summary["biases"]
    assert bias["heads"], "attribution found no robust heads"
    assert 1 <= bias["chosen_k"] <= 50

    out = tmp_path / "smollm2-no-late"
    figures = [str(run / "always_late.heatmap.png"), str(run / "always_late.k_curve.png")]
    result = wedit(
        "export", "--model", DEFAULT_BUILTIN, "--plan", str(run / "plan.json"), "--out", str(out), "--attach", *figures
    )
    assert result.returncode == 0, result.stderr
    assert (out / "figures" / "always_late.heatmap.png").is_file()
    result = wedit("verify", str(out), "--vllm")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "![always_late.heatmap](figures/always_late.heatmap.png)" in (out / "README.md").read_text()

    preset = get_preset("always_late")
    eval_pairs = load_pairs(run / "always_late.eval_pairs.jsonl")  # held out from attribution
    encoder = PromptEncoder(AutoTokenizer.from_pretrained(smollm2_dir))
    yb, yu = encoder.first_token(preset.biased_answer), encoder.first_token(preset.unbiased_answer)
    gaps = {}
    for name, path in (("base", smollm2_dir), ("export", out)):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        gaps[name] = stereotype_gap(model, encoder, eval_pairs, yb, yu, batch_size=16)
    print(
        f"stereotype logit gap on {preset.target} (held-out questions): base {gaps['base']:.3f}, export {gaps['export']:.3f}"
    )
    assert gaps["export"] < gaps["base"]
