"""`wedit run` end to end on the built-in model at CI size: interrupted, resumed, cached, and partly redone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from editor.recipes.runner import run_recipe
from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "smollm2-always_late.yaml"
# CI size: fewer questions, seeds, k values and evaluation pairs; vLLM is proven by the serving tests, so it is off here.
CI = [
    "attribute.questions=30",
    "attribute.eval_questions=10",
    "attribute.seeds=2",
    "attribute.k_max=8",
    "attribute.removals=[zero]",
    "attribute.wiki_tokens=256",
    "attribute.damage_budget=0.5",  # CI-sized sets: a generous budget so that the run has heads to export
    "verify.vllm=false",
    "eval.gap_pairs=10",
    "eval.bias_gap_pairs=4",
    "eval.pairwise_pairs=10",
    "eval.held_out_pairs=10",
    "eval.held_out_items=8",
    "eval.wiki_tokens=256",
]
ALL = ("source", "attribute", "plan", "export", "verify", "eval", "card")


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def statuses(report) -> dict[str, str]:
    return {r.name: r.status for r in report.records if r.status != "skipped"}


def interrupt_during_attribution(run: Path) -> None:
    """Start `wedit run` and kill it (SIGKILL: no clean-up) while attribution runs (its build directory exists)."""
    exe = shutil.which("wedit")
    cmd = [exe] if exe else [sys.executable, "-m", "editor.cli"]
    proc = subprocess.Popen(
        [*cmd, "run", str(RECIPE), "--out", str(run), *sets(CI)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 600
        while not any(p.is_dir() for p in run.glob(".attribute.partial-*")):
            assert proc.poll() is None, "wedit run ended before attribution started"
            assert time.monotonic() < deadline, "attribution did not start in 600 s"
            time.sleep(0.2)
        time.sleep(2)  # inside the stage (loading the model, first batches); CI-sized attribution takes far longer
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_run_resumes_caches_and_redoes_what_changed(tmp_path, smollm2_dir):
    run = tmp_path / "run"
    interrupt_during_attribution(run)
    assert (run / "source.done.json").is_file()
    assert not (run / "attribute.done.json").exists() and not (run / "attribute").exists()

    # Resume: the finished stage is kept, the interrupted one and all after it run, the dead build is swept away.
    result = wedit("run", str(RECIPE), "--out", str(run), *sets(CI))
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified export:" in result.stdout
    assert not list(run.glob(".*partial*"))
    markers = {name: json.loads((run / f"{name}.done.json").read_text()) for name in ALL}
    export = Path(markers["export"]["result"]["path"])
    manifest = json.loads((export / "editor_manifest.json").read_text())
    assert manifest["verification"]["transformers"]["passed"]
    assert manifest["recipe"]["settings"]["attribute"]["seeds"] == 2
    assert manifest["plan"] and all(e["kind"] == "zero_heads" for e in manifest["plan"])
    assert manifest["evaluation"]["summary"]["likelihood"]["base"]["association_gap"] is not None
    card = (export / "README.md").read_text()
    assert "model-index:" in card and "max logit error" in card  # evaluation and verification both reach the card
    # Published files hold no local path: not the run folder, the home folder or the checkout the recipe came from.
    published = (export / "editor_manifest.json").read_text() + card
    for local in (str(tmp_path), str(Path.home()), str(RECIPE.parent.parent)):
        assert local not in published, local
    assert (export / "figures" / "always_late.heatmap.png").is_file()

    # Unchanged: every stage is cached and nothing on disk changes.
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    report = run_recipe(RECIPE, run, overrides=CI, progress=False)
    assert statuses(report) == dict.fromkeys(ALL, "cached")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == stamps

    # One export setting changed: export and the stages after it run again, the ones before stay cached.
    report = run_recipe(RECIPE, run, overrides=[*CI, "export.max_shard_size=100MB"], progress=False)
    assert statuses(report) == {
        "source": "cached",
        "attribute": "cached",
        "plan": "cached",
        "export": "ran",
        "verify": "ran",
        "eval": "ran",
        "card": "ran",
    }
    assert (run / "attribute").stat().st_mtime_ns == stamps[run / "attribute"]
    manifest = json.loads((export / "editor_manifest.json").read_text())
    assert manifest["verification"]["transformers"]["passed"]  # the new export was verified and evaluated again
    assert "evaluation" in manifest

    # --from redoes a stage whose settings did not change, and with it every later stage.
    report = run_recipe(
        RECIPE, run, overrides=[*CI, "export.max_shard_size=100MB", "eval=false"], from_stage="verify", progress=False
    )
    assert statuses(report) == {
        "source": "cached",
        "attribute": "cached",
        "plan": "cached",
        "export": "cached",
        "verify": "ran",
        "card": "ran",
    }

    # A damage gate the export fails (any edit moves the first token, so a KL ceiling of 0 fails), with an lm-eval task
    # in the recipe's eval section: the run writes everything, exits 3, and the card and `wedit push` say why.
    task = Path(__file__).resolve().parent / "lm_eval_task" / "general_knowledge.yaml"
    gated = [
        *CI,
        "export.max_shard_size=100MB",
        f"eval.lm_eval=[{task}]",
        "eval.lm_eval_limit=8",
        "eval.lm_eval_fewshot=0",
        "eval.max_drop={first_token_kl: 0.0, wedit_general_knowledge: 1.0}",
    ]
    result = wedit("run", str(RECIPE), "--out", str(run), *sets(gated))
    print(result.stdout[-3000:])
    assert result.returncode == 3, result.stderr[-3000:]
    assert "fails its damage gate" in result.stderr and "FAILS damage gate" in result.stdout
    assert "wedit_general_knowledge: 32 requests" in result.stdout
    card = (export / "README.md").read_text()
    assert "> **Fails its damage gate**: first-token KL vs base (nats) dropped by" in card
    assert "| wedit_general_knowledge | acc | 8 |" in card and "| **FAIL** |" in card
    refused = wedit("push", str(export), "--repo", "me/smollm2-always_late", "--dry-run")
    assert refused.returncode == 2 and "fails its damage gate" in refused.stderr
