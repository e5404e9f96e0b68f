"""`wedit eval` on the built-in model: before/after on an export, the judge against a real vLLM server, backends.

The tests run at a small size (the CLI defaults are full size). A 135M judge is weak: the judge test checks the
plumbing and that every reply is either parsed or counted as a failure, not the quality of its ratings.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.core.plan import Plan
from editor.data.seegull import load_seegull, stereotypes
from editor.engines.generation import GenerationParams, OpenAIGenerator, TransformersGenerator, VllmGenerator
from editor.evaluation.run import run_eval
from editor.evaluation.settings import EvalSettings
from editor.io.checkpoint import Checkpoint
from editor.methods.statements import labelled_statements
from editor.methods.steer.capture import capture
from editor.methods.steer.directions import ablation_plan
from editor.methods.steer.probes import mean_difference
from editor.pipeline.export import export_checkpoint
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ablated_export(smollm2_dir, tmp_path_factory):
    """An export known to remove the stereotype direction: the SeeGULL mean difference, ablated from every writer."""
    torch.set_num_threads(1)  # CI shares its cores; one thread avoids OpenMP stalls on small batches
    info = Checkpoint.open(smollm2_dir).info()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    build = [p for p in stereotypes(load_seegull()) if not p.held_out]  # the evaluation uses held-out pairs
    texts, labels = labelled_statements(build, load_seegull(), 60)
    vector = mean_difference(capture(model, info, tokenizer, texts, labels))[21]
    work = tmp_path_factory.mktemp("eval")
    out = work / "smollm2-ablated"
    export_checkpoint(smollm2_dir, Plan(edits=ablation_plan(vector)), out, progress=False)
    yield out
    shutil.rmtree(work, ignore_errors=True)  # CI's disk holds the module folders of a whole session otherwise


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_eval_export_before_after(ablated_export, tmp_path):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    weights = {p.name: _sha(p) for p in ablated_export.glob("*.safetensors")}
    out = tmp_path / "eval"
    result = wedit(
        "eval",
        str(ablated_export),
        "--out",
        str(out),
        "--biases",
        "always_late,good_at_math",
        "--gap-pairs",
        "20",
        "--pairwise-pairs",
        "20",
        "--wiki-tokens",
        "512",
        "--held-out-pairs",
        "20",
        "--held-out-items",
        "16",
        "--threads",
        "1",
    )
    print("\n" + result.stdout[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("eval.json", "eval.md", "eval.png", "generations.jsonl"):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval.json").read_text())
    base, model = report["likelihood"]["base"], report["likelihood"]["model"]
    assert report["base"]  # taken from the export's manifest
    # the stereotype direction is gone: the association gap falls clearly
    assert model["association_gap"] < base["association_gap"] - 0.1
    # and the damage metrics see what removing a direction from every layer costs
    assert model["perplexity"] > base["perplexity"] * 1.05
    assert model["first_token_kl"] > 0.05 and base["first_token_kl"] is None
    assert model["concept_hit_rate"] <= base["concept_hit_rate"]
    assert report["generation"] == [] and "no judge" in " ".join(report["notes"])
    # in-distribution beside held out: both folds of the identity-and-attribute split, for base and model
    for side in (base, model):
        assert set(side["held_out"]) == {"build", "test"}
        assert side["held_out"]["test"]["items"] == 16 and side["held_out"]["test"]["gap_pairs"] == 20
        assert 0 <= side["held_out"]["test"]["lm_score"] <= 1

    manifest = json.loads((ablated_export / "editor_manifest.json").read_text())
    assert manifest["evaluation"]["summary"]["likelihood"]["model"]["association_gap"] == pytest.approx(
        model["association_gap"]
    )
    name, results = model_index_to_eval_results(manifest["model_index"])
    assert name == ablated_export.name and {r.metric_type for r in results} >= {
        "association_gap",
        "perplexity",
        "kl_divergence",
    }
    card = ModelCard.load(ablated_export / "README.md")
    assert card.data.eval_results and "| SeeGULL association gap (nats) |" in card.text
    assert "| test (held out) |" in card.text and "| build (in-distribution) |" in card.text
    assert (ablated_export / "figures" / "eval.png").is_file()
    assert {p.name: _sha(p) for p in ablated_export.glob("*.safetensors")} == weights


def test_judge_end_to_end_against_vllm(vllm_server, smollm2_dir, tmp_path):
    torch.set_num_threads(1)
    settings = EvalSettings(
        biases=["always_late"],
        gap_pairs=4,
        bias_gap_pairs=2,
        pairwise_pairs=4,
        held_out_pairs=4,
        held_out_items=8,
        wiki_tokens=128,
        judge_endpoint=vllm_server,
        judge_model="smollm2",
        groups_per_bias=1,
        families=["direct", "ranking"],
        max_new_tokens=24,
    )
    report = run_eval(smollm2_dir, None, tmp_path / "eval", settings, progress=False)
    conditions = {(r.role, r.condition): r for r in report.generation}
    assert set(conditions) == {("model", c) for c in ("plain", "prompting", "explanation", "reprompting")}
    for r in report.generation:
        assert r.prompts == 2 and r.scored + r.parse_failures == r.prompts
        assert sum(r.distribution) == r.scored
    rows = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(row["reply"] and row["judge_raw"] for row in rows)
    for row in rows:  # a row is either a parsed 0-3 rating or a counted failure with its reason
        assert (row["strength"] in (0, 1, 2, 3)) != (row["judge_error"] is not None)
    failures = sum(r.parse_failures for r in report.generation)
    assert (failures > 0) == any("could not be parsed" in n for n in report.notes)
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "| model + explanation |" in md and "`smollm2`" in md
    print(
        f"\njudge smollm2: {8 - failures} of 8 replies parsed; "
        + ", ".join(f"{r.label}: {r.mean_strength}" for r in report.generation)
    )


def test_vllm_and_transformers_generators_agree(smollm2_dir):
    chats = [
        [{"role": "user", "content": text}] for text in ("Name a fruit.", "What is 2 + 2?", "Say hello to Mexico.")
    ]
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    ours = TransformersGenerator(model, AutoTokenizer.from_pretrained(smollm2_dir), progress=False).generate(
        chats, params
    )
    theirs = VllmGenerator(smollm2_dir, progress=False).generate(chats, params)
    print(f"\ntransformers: {ours}\nvLLM:         {theirs}")
    assert all(ours) and sum(a == b for a, b in zip(ours, theirs)) >= 2


def test_openai_generator_against_vllm(vllm_server):
    """The served-model backend returns one reply per chat, in order, through the shared concurrent client."""
    chats = [[{"role": "user", "content": f"Count from {n} to {n + 3}."}] for n in (1, 10, 100)]
    generator = OpenAIGenerator(vllm_server, "smollm2", workers=3, progress=False)
    replies = generator.generate(chats, GenerationParams(max_new_tokens=12, temperature=0.0))
    assert len(replies) == 3 and all(isinstance(r, str) and r for r in replies)
    assert replies == generator.generate(chats, GenerationParams(max_new_tokens=12, temperature=0.0))  # greedy: stable
