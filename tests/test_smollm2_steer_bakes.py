"""Acceptance: the three steering bakes on the built-in model, each exported, verified, and re-scored.

`wedit steer` picks one point per bake under a +5% perplexity budget from a
hooked sweep; here every chosen plan is exported, `wedit verify` proves the
export equals the hooked base, and the export itself is scored again on the
held-out SeeGULL pairs and WikiText-2 (not the sweep's numbers).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.data import wikitext_txt
from editor.data.seegull import load_seegull
from editor.evaluation.metrics import association_gap, perplexity, wikitext_tokens
from editor.methods.steer.settings import METHODS
from editor.methods.steer.sweep import evaluation_pairs
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow

EVAL_PAIRS = 40


def test_three_bakes_export_verify_and_lower_the_gap(tmp_path, smollm2_dir):
    torch.set_num_threads(1)  # CI's two cores are shared; one thread avoids OpenMP stalls on small batches
    run = tmp_path / "steer"
    result = wedit(
        "steer",
        "--model",
        str(smollm2_dir),
        "--layers",
        "15,21",
        "--alphas",
        "0.75",
        "--residual-contrasts",
        "negation",
        "--edit-alphas",
        "0.1",
        "--keys",
        "contrast",
        "--ablation-ridges",
        "0.01",
        "--ablation-strengths",
        "1",
        "--statements",
        "200",
        "--eval-pairs",
        str(EVAL_PAIRS),
        "--out",
        str(run),
    )
    print("\n" + result.stdout)
    assert result.returncode == 0, result.stderr[-3000:]
    probes = json.loads((run / "probes.json").read_text())
    # Telling a stereotyped group from an unlinked one for the same attribute is a real task (not a word
    # to spot): on SmolLM2 the best layers reach about 0.65-0.7 on held-out statements, chance is 0.5.
    # Above chance on average (measured mean 0.62 over the 30 blocks).
    assert len(probes) == 30 and sum(p["test_accuracy"] for p in probes) / 30 > 0.55
    print("probe test accuracy by layer:", " ".join(f"{p['test_accuracy']:.2f}" for p in probes))
    sweep = json.loads((run / "sweep.json").read_text())
    base_gap, base_ppl = sweep["base_gap"], sweep["base_perplexity"]

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    all_pairs = load_seegull()
    held = evaluation_pairs(all_pairs, EVAL_PAIRS)
    tokens = wikitext_tokens(tokenizer, wikitext_txt(), 2048)
    missing = [m for m in METHODS if not (run / f"plan_{m}.json").is_file()]
    assert not missing, f"no point inside the damage budget for {', '.join(missing)}; see {run / 'sweep.json'}"
    rows = []
    for method in METHODS:
        plan = run / f"plan_{method}.json"
        out = tmp_path / f"export-{method}"
        result = wedit("export", "--model", str(smollm2_dir), "--plan", str(plan), "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        result = wedit("verify", str(out))
        print(f"{method}: {result.stdout.strip()}")
        assert result.returncode == 0, result.stdout + result.stderr
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        gap = association_gap(model, tokenizer, all_pairs, held).mean
        ppl = perplexity(model, tokens)
        rows.append((method, gap, ppl))
        print(
            f"{method}: export gap {base_gap:.3f} -> {gap:.3f}, perplexity {base_ppl:.2f} -> {ppl:.2f} ({ppl / base_ppl - 1:+.1%})"
        )
    for method, gap, ppl in rows:
        assert gap < base_gap - 0.05 * abs(base_gap), f"{method}: gap {gap:.3f} not below base {base_gap:.3f}"
        assert ppl <= base_ppl * 1.05, f"{method}: perplexity {ppl:.2f} over +5% of {base_ppl:.2f}"
