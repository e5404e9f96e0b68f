"""The steering pipeline end to end on the built-in model, at a small size (artifacts and coherence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.core.plan import load_plan
from editor.io.checkpoint import Checkpoint
from editor.methods.steer.settings import SteerSettings
from editor.methods.steer.sweep import run_steer

pytestmark = pytest.mark.slow


def test_run_steer_small(tmp_path, smollm2_dir):
    info = Checkpoint.open(smollm2_dir).info()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    settings = SteerSettings(
        layers=[21],
        alphas=[0.75],
        edit_alphas=[0.1],
        keys=["biased_mean"],
        ablation_ridges=[0.03],
        ablation_strengths=[0.6],
        statements=40,
        eval_pairs=10,
        wiki_tokens=256,
        generic_tokens=1024,
    )
    report = run_steer(model, tokenizer, info, tmp_path, settings, progress=False)
    assert len(report.probe_accuracy) == info.num_layers and min(report.probe_accuracy) >= 0.5
    assert {p.method for p in report.points} == {"residual_add", "ablate_direction", "steer2edit"}
    # the residual add is swept with both statement sets' vectors; the second set's vectors are saved too
    assert {p.variant for p in report.points if p.method == "residual_add"} == {"identity vector", "negation vector"}
    names = (
        "vectors.safetensors",
        "vectors.json",
        "vectors_after_attention.safetensors",
        "vectors_after_attention.json",
    )
    names += ("vectors_negation.safetensors", "vectors_negation.json")
    for name in (
        *names,
        "probes.json",
        "sweep.json",
        "probe_accuracy.png",
        "pareto.png",
        "probe_directions.safetensors",
    ):
        assert (tmp_path / name).is_file(), name
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert 15 < sweep["base_perplexity"] < 60 and sweep["damage_budget"] == 0.05  # SmolLM2: about 25 on WikiText-2
    for method, point in report.chosen.items():
        if point is not None:
            plan = load_plan(tmp_path / f"plan_{method}.json")
            assert plan.edits
    # the saved vectors use the import-vectors sidecar format, so they round-trip into a plan
    from editor.methods.import_vectors import read_vectors

    vectors = read_vectors(Path(tmp_path / "vectors.safetensors"))
    assert sorted(vectors.vectors) == list(range(info.num_layers))
