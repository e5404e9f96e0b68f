"""Acceptance, and the quickstart as the documentation prints it: BiasScope on the built-in model, baked, verified
in vLLM and llama.cpp, lowering the bias on a real country within the damage budget."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.data.biases import get_preset
from editor.methods.attribute.pairs import load_pairs
from editor.methods.attribute.pipeline import PromptEncoder, stereotype_gap
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow


def check_choice_rule(result: dict) -> None:
    """The documented rule, recomputed from the recorded points: inside the damage budget, the gap lowered by at
    least 5%, and no such point closer to zero gap; the saturation k is the first-removal curve's 90% knee."""
    base, budget, baseline = result["base"]["perplexity"], result["damage_budget"], result["baseline_gap"]
    chosen = result["chosen"]
    assert chosen["perplexity"] <= base * (1 + budget)
    assert chosen["gap"] <= baseline - 0.05 * abs(baseline)
    eligible = [
        p
        for p in result["points"]
        if p["heads"]
        and p["perplexity"] is not None
        and p["perplexity"] <= base * (1 + budget)
        and p["gap"] <= baseline - 0.05 * abs(baseline)
    ]
    assert min(abs(p["gap"]) for p in eligible) == abs(chosen["gap"])
    assert {p["removal"] for p in result["points"]} == {"zeroed", "mean-ablated", "scaled by 0.5"}
    gaps, ks = result["k_scores"], result["k_values"]
    drop = baseline - min(gaps)
    knee = next(k for k, g in zip(ks, gaps) if baseline - g >= 0.9 * drop)
    assert result["saturation_k"] == knee and result["saturation"]["perplexity"] is not None
    assert result["heads"] == chosen["heads"] and result["chosen_k"] == chosen["k"]


QUICKSTART = Path(__file__).resolve().parents[1] / "docs" / "pages" / "getting-started.md"


def quickstart_commands() -> list[list[str]]:
    """The quickstart's command lines, read from the page (the fenced block after ``<!-- quickstart -->``)."""
    text = QUICKSTART.read_text()
    block = text.split("<!-- quickstart -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_the_quickstart_runs_as_written_and_lowers_the_gap(tmp_path, smollm2_dir, monkeypatch):
    """The getting-started page's five commands, run as they appear there (in a scratch folder, so runs/ is its
    own): BiasScope on the built-in model, the export, vLLM, GGUF and llama.cpp. Then the choice it made is
    checked against the documented rule, and the export lowers the gap within the damage budget."""
    monkeypatch.chdir(tmp_path)
    commands = quickstart_commands()
    assert len(commands) <= 5 and all(c[0] == "wedit" for c in commands)
    for command in commands:
        result = wedit(*command[1:])
        print(f"\n$ {shlex.join(command)}\n{result.stdout[-3000:]}")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run, out = tmp_path / "runs" / "attribute", tmp_path / "runs" / "smollm2-no-late"
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
    assert bias["heads"], "no k lowers the gap within the damage budget"
    check_choice_rule(json.loads((run / "always_late.attribution.json").read_text()))
    assert (out / "figures" / "always_late.heatmap.png").is_file()
    assert "![always_late.heatmap](figures/always_late.heatmap.png)" in (out / "README.md").read_text()
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert manifest["verification"]["vllm"]["identical"] >= 7
    assert (out / "smollm2-no-late-q8_0.gguf").is_file() and manifest["verification"]["llama_cpp"]["passed"]

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

    # The export keeps the sweep's promise: perplexity on the sweep's own tokens within the budget (bf16 storage of
    # zeroed or halved columns is exact, a mean's bias is float32, so the export computes what the hooks did).
    from editor.data import wikitext_txt
    from editor.evaluation.metrics import perplexity, wikitext_tokens

    tokens = wikitext_tokens(encoder.tokenizer, wikitext_txt(None), summary["settings"]["wiki_tokens"])
    ppl = {
        n: perplexity(AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval(), tokens)
        for n, p in (("base", smollm2_dir), ("export", out))
    }
    print(f"WikiText-2 perplexity: base {ppl['base']:.2f}, export {ppl['export']:.2f}")
    assert ppl["export"] <= ppl["base"] * (1 + summary["settings"]["damage_budget"]) + 1e-3
