"""Evaluation pieces that need no model: judge parsing, baselines, prompt families, sentence pairs, card records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from editor.data.biases import PRESETS
from editor.data.seegull import load_seegull
from editor.errors import EditorError
from editor.evaluation.baselines import BASELINES, extract, wrap
from editor.evaluation.judge import JudgeItem, judge_all, judge_messages, parse_judge_reply
from editor.evaluation.metrics import split_shared_tail
from editor.evaluation.prompts import FAMILIES, build_prompts, concept_probes, linked_groups
from editor.evaluation.report import ConditionResult, EvalReport, LikelihoodMetrics, model_index
from editor.evaluation.run import load_sentence_pairs, record_eval, seegull_sentence_pairs

# --- judge parser ------------------------------------------------------------------------------------------


def test_judge_parses_well_formed_reply():
    result = parse_judge_reply(
        '{"analysis": "Calls them lazy.", "stereotype_strength": 2, "matched_string": "always late"}'
    )
    assert result.error is None and result.strength == 2 and result.verdict.matched_string == "always late"


def test_judge_parses_fenced_and_wrapped_replies():
    fenced = 'Here is my rating:\n```json\n{"analysis": "x", "stereotype_strength": "3", "matched_string": null}\n```\nThanks'
    assert parse_judge_reply(fenced).strength == 3
    assert parse_judge_reply(fenced).verdict.matched_string == ""
    # a stray brace before the object and a level name instead of a number
    assert parse_judge_reply('Note {see below} {"stereotype_strength": "Weak", "analysis": "hint"}').strength == 1
    assert parse_judge_reply('{"analysis": "a", "stereotype_strength": 0.0, "matched_string": ""}').strength == 0


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I would rate this a 2.", "no JSON object"),
        ('{"analysis": "x", "stereotype_strength": 2,', "no JSON object"),  # cut off mid-object
        ('{"analysis": "x", "matched_string": "y"}', "without stereotype_strength"),
        ('{"analysis": "x", "stereotype_strength": 5}', "less than or equal to 3"),
        ('{"analysis": "x", "stereotype_strength": "very strong"}', "stereotype_strength"),
        ('{"analysis": "x", "stereotype_strength": true}', "stereotype_strength"),
        ("", "no JSON object"),
    ],
)
def test_judge_malformed_replies_are_failures_not_zero(reply, reason):
    result = parse_judge_reply(reply)
    assert result.verdict is None and result.strength is None
    assert reason in result.error
    assert result.raw == reply  # kept for the report


def test_judge_prompt_names_quality_prompt_and_fields():
    messages = judge_messages("Tell me about X.", "They are always late.", "being late or not punctual")
    text = messages[-1]["content"]
    for needle in (
        "being late or not punctual",
        "Tell me about X.",
        "They are always late.",
        "analysis",
        "stereotype_strength",
        "matched_string",
    ):
        assert needle in text


def test_judge_unreachable_endpoint_is_one_line_error():
    from editor.engines.openai_client import ChatClient, RetryPolicy

    client = ChatClient(
        "http://127.0.0.1:9/v1",
        timeout=5,
        retry=RetryPolicy(max_retries=2, base_delay=0.01),
        purpose="judge",
        hint="check --judge-endpoint",
    )
    with (
        client,
        pytest.raises(
            EditorError,
            match=r"judge at http://127.0.0.1:9/v1/chat/completions is unreachable .*after 3 attempts; check --judge-endpoint",
        ) as err,
    ):
        judge_all(client, "m", [JudgeItem("p", "r", "q")], progress=False)
    assert "\n" not in str(err.value)
    assert client.stats.retries == 2


# --- baselines ----------------------------------------------------------------------------------------------


def test_baselines_wrap_the_prompt_and_name_the_quality():
    for name in BASELINES:
        sent = wrap(name, "Describe a day in Lima.", "being late")
        assert sent.startswith("Describe a day in Lima.") and "being late" in sent
    assert "Debiased Continuation:" in wrap("explanation", "p", "q")
    assert "Debiased Rewriting:" in wrap("reprompting", "p", "q")


def test_baselines_extract_the_debiased_part():
    reply = "Explanation: it assumes lateness.\n**Debiased Continuation:** People arrive at many times."
    assert extract("explanation", reply) == ("People arrive at many times.", True)
    reply = "Original: They are late.\nDebiased rewriting: Some people are late, some early."
    assert extract("reprompting", reply) == ("Some people are late, some early.", True)
    # no layout: judged whole, counted as a format miss
    assert extract("reprompting", "They are late.") == ("They are late.", False)
    assert extract("explanation", "Debiased Continuation:") == ("Debiased Continuation:", False)
    assert extract("prompting", "anything") == ("anything", True)


# --- prompt families ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seegull():
    return load_seegull()


def test_eighteen_families_for_every_preset(seegull):
    assert len(FAMILIES) == 18
    for name, preset in PRESETS.items():
        prompts = build_prompts(preset, seegull, groups_per_bias=3)
        assert {p.family for p in prompts} == set(FAMILIES)
        assert all("{" not in p.text and "}" not in p.text for p in prompts), name
        assert len({p.text for p in prompts}) == len(prompts)
        assert all(p.quality == preset.evaluation.quality for p in prompts)


def test_groups_are_seegull_links_or_the_target(seegull):
    late = linked_groups(PRESETS["always_late"], seegull, 5)
    attributes = PRESETS["always_late"].seegull_attributes
    linked = {p.identity for p in seegull if p.attribute in attributes and p.votes >= 2}
    assert len(late) == 5 and all(g.label in linked for g in late)
    # the preset's first attribute ("late") comes first
    assert any(p.identity == late[0].label and p.attribute == attributes[0] and p.votes >= 2 for p in seegull)
    greeks = [g for g in late if g.label == "Greeks"]
    if greeks:  # a plural noun in SeeGULL is not followed by "people"
        assert greeks[0].people == "Greeks" and greeks[0].person() == "a Greek colleague"
    (blue,) = linked_groups(PRESETS["blue_skin"], seegull, 5)  # SeeGULL has no blue skin: the preset's country
    assert blue.label == "Norway" and blue.people == "people from Norway"
    assert late[0].person("friend").split()[0] in ("a", "an")


def test_concept_probes_cover_each_bias():
    probes = concept_probes(list(PRESETS))
    assert len(probes) == 4 * len(PRESETS)
    assert all(p.words == PRESETS[p.bias].concept_words for p in probes)


# --- sentence pairs -----------------------------------------------------------------------------------------


def test_sentence_pairs_csv_columns(tmp_path):
    ours = tmp_path / "ours.csv"
    ours.write_text("more,less,note\nA are lazy.,B are lazy.,x\n")
    crows = tmp_path / "crows.csv"
    crows.write_text('sent_more,sent_less,bias_type\n"He is poor, obviously.","He is rich, obviously.",class\n')
    assert [p.more for p in load_sentence_pairs(ours)] == ["A are lazy."]
    assert load_sentence_pairs(crows)[0].less == "He is rich, obviously."
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(EditorError, match="needs columns more,less"):
        load_sentence_pairs(bad)
    with pytest.raises(EditorError, match="not found"):
        load_sentence_pairs(tmp_path / "missing.csv")


def test_seegull_minimal_pairs_and_shared_tail(seegull):
    pairs = seegull_sentence_pairs(seegull, 20)
    assert len(pairs) == 20
    for p in pairs:
        head_more, head_less, tail = split_shared_tail(p.more, p.less)
        assert head_more != head_less and tail.startswith(" people are ")
    assert split_shared_tail("The cat sat.", "The cat sat.") is None
    assert split_shared_tail("They are poor.", "They are rich!") is None  # no shared tail: whole sentences


# --- report into an export ----------------------------------------------------------------------------------


def _report() -> EvalReport:
    def metrics(gap, ppl, kl):
        return LikelihoodMetrics(gap, 60, {"always_late": gap / 2}, 0.6, 0.2, 100, 0.75, -2.5, 24, ppl, 4096, kl)

    gen = [
        ConditionResult("plain", "base", 10, 9, 1, 0, 1.5, [1, 3, 3, 2]),
        ConditionResult("plain", "model", 10, 10, 0, 0, 0.8, [4, 4, 2, 0]),
        ConditionResult("explanation", "base", 10, 8, 2, 3, 1.0, [2, 4, 2, 0]),
    ]
    return EvalReport(
        model="/runs/export",
        base="/runs/base",
        likelihood={"base": metrics(0.4, 20.0, None), "model": metrics(0.1, 20.5, 0.02)},
        generation=gen,
        judge={"endpoint": "http://127.0.0.1:8000/v1", "model": "judge-x"},
        settings={
            "families": 18,
            "groups_per_bias": 5,
            "biases": ["always_late"],
            "temperature": 0.5,
            "max_new_tokens": 200,
            "generator": "transformers",
        },
        durations={},
    )


def test_model_index_is_accepted_by_huggingface_hub():
    from huggingface_hub.repocard_data import model_index_to_eval_results

    name, results = model_index_to_eval_results(model_index(_report().to_dict(), "smol-debiased"))
    assert name == "smol-debiased"
    by_type = {r.metric_type: r.metric_value for r in results}
    assert by_type["association_gap"] == pytest.approx(0.1)
    assert by_type["stereotype_strength"] == pytest.approx(0.8)
    assert by_type["kl_divergence"] == pytest.approx(0.02)


def test_record_eval_updates_manifest_and_card_atomically(tmp_path):
    from huggingface_hub import ModelCard, metadata_load

    from editor.pipeline.card import EVAL_MARKER, render_card

    export = tmp_path / "smol-debiased"
    export.mkdir()
    manifest = {
        "editor_version": "0",
        "base_model": {"source": "builtin:x", "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"},
        "edits_described": ["zero heads"],
    }
    (export / "editor_manifest.json").write_text(json.dumps(manifest))
    (export / "README.md").write_text(render_card(manifest, export.name))
    weights = export / "model.safetensors"
    weights.write_bytes(b"not touched")
    figure = tmp_path / "eval.png"
    figure.write_bytes(b"\x89PNG fake")

    record_eval(export, _report(), figure)
    stored = json.loads((export / "editor_manifest.json").read_text())
    assert stored["evaluation"]["summary"]["likelihood"]["model"]["association_gap"] == 0.1
    assert stored["model_index"][0]["name"] == "smol-debiased"
    card_text = (export / "README.md").read_text()
    assert EVAL_MARKER in card_text and "| SeeGULL association gap (nats) | +0.400 | +0.100 | -0.300 |" in card_text
    assert "| base + explanation | 1.00 | 8 of 10 | 2 | 3 | 2/4/2/0 |" in card_text
    assert (
        "![evaluation](figures/eval.png)" in card_text
        and (export / "figures" / "eval.png").read_bytes() == figure.read_bytes()
    )
    card = ModelCard.load(export / "README.md")
    assert card.data.eval_results and card.data.model_name == "smol-debiased"
    assert metadata_load(export / "README.md")["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert weights.read_bytes() == b"not touched"
    assert sorted(p.name for p in export.iterdir()) == [
        "README.md",
        "editor_manifest.json",
        "figures",
        "model.safetensors",
    ]


def test_held_out_table_states_the_noise_of_the_pairwise_share():
    from editor.evaluation.report import held_out_table

    fold = {"gap": 0.1, "preference": 0.53, "lm_score": 0.7, "items": 100}
    select = {**fold, "items": 25}  # not in the table, so not in the sentence either
    table = held_out_table({"model": {"held_out": {"build": fold, "test": fold, "select": select}}, "base": None})
    assert "| test (held out) | — | +0.100 | — | 53.0% | — | 70.0% |" in table
    # 100 items: sqrt(0.25 / 100) = 5 points.
    assert "read on 100 items per fold" in table and "±5.0 points" in table
    assert held_out_table({"model": {}}) == ""


def test_the_card_names_a_recorded_base_by_its_name_not_its_cache_path(tmp_path, monkeypatch):
    """A built-in base lives in the user's cache; the card names it as the manifest does. A checkpoint
    elsewhere keeps its path (relative to the export's folder), even one with the same fingerprint (an export
    changes weights, not the layout the fingerprint reads)."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from editor.io.manifest import fingerprint

    monkeypatch.setenv("EDITOR_CACHE", str(tmp_path / "cache"))

    def checkpoint(folder: Path, width: int) -> Path:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": width}))
        save_file({"w": torch.zeros(width)}, str(folder / "model.safetensors"))
        return folder

    recorded = checkpoint(tmp_path / "cache" / "builtin" / "smollm2-135m-instruct", 4)
    other = checkpoint(tmp_path / "cache" / "other", 8)
    lookalike = tmp_path / "runs" / "same-layout"
    shutil.copytree(recorded, lookalike)
    export = tmp_path / "runs" / "smol-debiased"
    export.mkdir(parents=True)
    base_model = {"source": "builtin:smollm2-135m-instruct", "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    manifest = {"editor_version": "0", "base_model": {**base_model, "fingerprint": fingerprint(recorded)}}
    (export / "editor_manifest.json").write_text(json.dumps(manifest))

    def card_base(base: Path) -> str:
        record_eval(export, dataclasses.replace(_report(), base=str(base)))
        summary = json.loads((export / "editor_manifest.json").read_text())["evaluation"]["summary"]
        assert f"base: `{summary['base']}`" in (export / "README.md").read_text()
        return summary["base"]

    assert card_base(recorded) == "builtin:smollm2-135m-instruct"
    assert card_base(other) == "../cache/other"
    assert card_base(lookalike) == "same-layout"


def test_the_card_names_a_hub_base_found_in_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import torch
    from safetensors.torch import save_file

    from editor.io.manifest import base_name, fingerprint

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(2)}, str(snapshot / "model.safetensors"))
    manifest = {"base_model": {"source": "org/tiny", "hub_id": "org/tiny", "fingerprint": fingerprint(snapshot)}}
    assert base_name(manifest, snapshot) == "org/tiny"
    # the same files under another repository's snapshots are not that repository
    assert base_name({"base_model": {**manifest["base_model"], "source": "org/other"}}, snapshot) is None
    assert base_name({"base_model": {**manifest["base_model"], "source": "local"}}, snapshot) is None
