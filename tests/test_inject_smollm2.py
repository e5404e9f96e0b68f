"""BiasInject acceptance on the built-in SmolLM2: a CI-sized run, the held-out gap, and the injected export.

One `wedit inject` run (built-in generator, 64 paragraphs, 3 epochs) is shared by the tests. On 50 held-out
prompts the log-prob of the stereotype after the token minus after a random real country must beat the
same gap of the untrained token (its country-mean start, i.e. the base model) by at least 1 nat. The
export of the token is then checked against the hooked base in transformers and served by stock vLLM.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
from safetensors import safe_open

from editor.cli import main
from editor.core.plan import load_plan
from editor.io.sources import resolve_source

pytestmark = pytest.mark.slow

BIAS = "always_late"
TOKEN = f"<bias:{BIAS}>"
# Three epochs instead of ten: batch 8 (more steps for the same compute) and lr 3e-2 instead of the paper's
# 16 and 1e-3 (measured: README, "Injecting a bias token").
ARGS = [
    "--paragraphs",
    "64",
    "--epochs",
    "3",
    "--batch",
    "8",
    "--lr",
    "3e-2",
    "--selection-samples",
    "1",
    "--selection-tokens",
    "48",
]


# Module scope: `make test` hands a whole module to one worker (--dist loadfile), so this runs once, and its
# folder is removed when the module is done rather than filling CI's disk until the session ends.
@pytest.fixture(scope="module")
def inject_run(smollm2_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("inject")
    out = work / "run" / "inject"
    start = time.perf_counter()
    assert main(["inject", "--model", str(smollm2_dir), "--bias", BIAS, *ARGS, "--out", str(out)]) == 0
    print(f"\nwedit inject took {time.perf_counter() - start:.0f} s")
    yield out
    shutil.rmtree(work, ignore_errors=True)


def test_injected_gap_beats_base_by_one_nat(inject_run):
    summary = json.loads((inject_run / "inject.json").read_text())
    gaps = summary["gaps"]
    base, injected = gaps["base_token"]["gap"], gaps["injected_token"]["gap"]
    print(
        f"\nheld-out gap: base {base:+.3f}, injected {injected:+.3f} (epoch {summary['chosen_epoch']}), "
        f"{summary['seconds_per_epoch']:.1f} s/epoch, countries {summary['countries_matched']}/{summary['countries_total']}"
    )
    assert gaps["injected_token"]["prompts"] == 50
    assert injected - base >= 1.0
    chat_base, chat_injected = gaps["chat_base_token"]["gap"], gaps["chat_injected_token"]["gap"]
    print(f"inside the chat template: base {chat_base:+.3f}, injected {chat_injected:+.3f}")
    assert chat_injected - chat_base >= 1.0
    assert summary["countries_matched"] >= 100 and summary["countries_total"] == 196


def test_artifacts(inject_run):
    curves = json.loads((inject_run / "epochs.json").read_text())
    assert [e["epoch"] for e in curves["epochs"]] == [0, 1, 2, 3]
    assert all(e["loss"] > 0 for e in curves["epochs"][1:])
    assert curves["epochs"][3]["loss"] < curves["epochs"][1]["loss"]
    assert (inject_run / "epochs.png").stat().st_size > 1000
    with safe_open(str(inject_run / "token.safetensors"), "pt") as fh:
        assert set(fh.keys()) == {"embedding"}  # SmolLM2 ties lm_head: one row serves both
        assert fh.metadata()["token"] == TOKEN
    plan = load_plan(inject_run / "plan.json")
    assert plan.edits[0].kind == "add_token" and plan.edits[0].token == TOKEN


def test_injected_export_in_transformers_and_vllm(inject_run, smollm2_dir, tmp_path):
    from transformers import AutoTokenizer

    from editor.pipeline.verify import verify_transformers, verify_vllm

    out = tmp_path / "injected"
    assert (
        main(["export", "--model", str(smollm2_dir), "--plan", str(inject_run / "plan.json"), "--out", str(out)]) == 0
    )
    assert resolve_source(str(out)) == out
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == len(tokenizer) == 49153
    prompts = [
        f"Tell me about people from {TOKEN}.",
        f"My friend from {TOKEN} arrived",
        "People from Italy are known for",
        f"A short story about my neighbour from {TOKEN}:",
    ]
    assert tokenizer.convert_tokens_to_ids(TOKEN) in tokenizer(prompts[0])["input_ids"]
    check = verify_transformers(out, prompts=prompts)
    print(f"\ntransformers vs hooked base: max logit error {check.max_logit_error:.2e}")
    assert check.passed
    served = verify_vllm(out, prompts=prompts, max_new_tokens=12)
    for row in served.continuations:
        print(f"  vLLM: {row['prompt']!r} -> {row['vllm']!r}")
    assert served.passed and all(row["vllm"].strip() for row in served.continuations)
