"""`wedit eval --lm-eval` on the built-in SmolLM2 and an export that damages it, offline, through the CLI.

The task is the shipped tests/lm_eval_task (40 general-knowledge questions, 0-shot, 160 loglikelihood requests per
model); the export adds a large random vector to the residual stream after block 8, a bake known to cost the quiz
(measured 0.55 -> 0.25 accuracy). The numbers must reach eval.json, the card's table and its model-index, the damage
gate must fail (exit 3, said in the card) and `wedit push` must refuse the export.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from editor.core.plan import parse_plan
from editor.pipeline.export import export_checkpoint
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow
pytest.importorskip("lm_eval")

TASK = Path(__file__).resolve().parent / "lm_eval_task" / "general_knowledge.yaml"
NAME = "wedit_general_knowledge"
# CI size; the held-out folds are not what this file tests.
SMALL = ["--biases", "always_late", "--gap-pairs", "5", "--bias-gap-pairs", "2", "--pairwise-pairs", "5"]
SMALL += ["--held-out-pairs", "5", "--held-out-items", "8"]


@pytest.fixture(scope="module")
def damaged_export(smollm2_dir, tmp_path_factory):
    hidden = json.loads((smollm2_dir / "config.json").read_text())["hidden_size"]
    vector = np.random.default_rng(0).standard_normal(hidden)
    vector *= 400.0 / np.linalg.norm(vector)
    edit = {"kind": "residual_add", "layer": 8, "site": "mlp", "vector": vector.tolist(), "scale": 1.0}
    work = tmp_path_factory.mktemp("lm_eval")
    out = work / "smollm2-noised"
    export_checkpoint(smollm2_dir, parse_plan({"edits": [edit]}), out, progress=False)
    verified = wedit("verify", str(out))
    assert verified.returncode == 0, verified.stderr[-2000:]
    yield out
    shutil.rmtree(work, ignore_errors=True)  # CI's disk holds the module folders of a whole session otherwise


def test_offline_task_on_base_and_export_reaches_eval_card_and_gate(damaged_export, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "eval"
    start = time.monotonic()
    result = wedit(
        "eval",
        str(damaged_export),
        "--out",
        str(out),
        "--lm-eval",
        str(TASK),
        "--lm-eval-fewshot",
        "0",
        "--max-drop",
        f"{NAME}.acc=0.1",
        *SMALL,
        "--wiki-tokens",
        "128",
        "--threads",
        "1",
    )
    seconds = time.monotonic() - start
    print("\n" + result.stdout[-2500:])
    assert result.returncode == 3, result.stderr[-3000:]  # everything written, but the gate fails
    assert f"{NAME}: 160 requests (loglikelihood 160) over 40 items, 0-shot" in result.stdout  # counted first
    assert "Running loglikelihood requests" in result.stderr  # lm-eval's own progress bar
    assert "fails its damage gate" in result.stderr.splitlines()[-1]

    report = json.loads((out / "eval.json").read_text())
    section = report["lm_eval"]
    rows = {(r["task"], r["metric"]): r for r in section["rows"]}
    acc = rows[(NAME, "acc")]
    assert acc["items"] == 40 and acc["num_fewshot"] == 0 and section["version"] == "0.4.13"
    assert acc["base"] >= 0.45  # the base answers well above chance (0.25)
    assert acc["change"] < -0.15  # and the noised export loses a clear share of it
    assert acc["change_stderr_kind"] == "paired" and 0 < acc["change_stderr"] < abs(acc["change"])
    assert set(rows) == {(NAME, "acc"), (NAME, "acc_norm")}
    gate = report["gates"][0]
    assert gate["key"] == f"{NAME}.acc" and not gate["passed"] and gate["drop"] == pytest.approx(-acc["change"])

    card = ModelCard.load(damaged_export / "README.md")
    published = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_type == NAME}
    assert published == {
        "acc": pytest.approx(acc["model"]),
        "acc_norm": pytest.approx(rows[(NAME, "acc_norm")]["model"]),
    }
    assert f"| {NAME} | acc | 40 | {acc['base']:.4f} | {acc['model']:.4f} | {acc['change']:+.4f} ± " in card.text
    assert "> **Fails its damage gate**" in card.text and "| **FAIL** |" in card.text
    manifest = json.loads((damaged_export / "editor_manifest.json").read_text())
    assert manifest["evaluation"]["summary"]["lm_eval"]["rows"] == section["rows"]

    refused = wedit("push", str(damaged_export), "--repo", "me/smollm2-noised", "--dry-run")
    assert refused.returncode == 2 and "fails its damage gate" in refused.stderr
    print(
        f"{NAME} acc {acc['base']:.3f} -> {acc['model']:.3f} ({acc['change']:+.3f} ± {acc['change_stderr']:.3f}); "
        f"lm-eval {section['seconds']}; wedit eval {seconds:.0f} s in all"
    )
