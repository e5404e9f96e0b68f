"""lm-eval comparison and damage gates without a model: rows, paired errors, gates, model-index, push, missing extra.

The request count runs lm-eval's own task loader on the shipped offline task (tests/lm_eval_task), no model.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from editor.core.settings import add_flags, from_flags
from editor.errors import EditorError
from editor.evaluation.gates import check_gates, check_keys, failures
from editor.evaluation.lm_eval import compare
from editor.evaluation.report import model_index, render_markdown
from editor.evaluation.settings import EvalSettings

TASK = Path(__file__).resolve().parent / "lm_eval_task" / "general_knowledge.yaml"


def _raw(acc: list[int], *, stereo: float, group_acc: float) -> dict:
    """What editor.evaluation.lm_eval.compact keeps of one simple_evaluate answer (a task, a group, a bias task)."""
    n = len(acc)
    mean = sum(acc) / n
    se = math.sqrt(mean * (1 - mean) / (n - 1))
    return {
        "results": {
            "quiz": {"alias": "quiz", "acc,none": mean, "acc_stderr,none": se},
            "suite": {"alias": "suite", "acc,none": group_acc, "acc_stderr,none": 0.01},
            "suite_a": {"alias": " - suite_a", "acc,none": group_acc, "acc_stderr,none": 0.02},
            "pairs": {"alias": "pairs", "pct_stereotype,none": stereo, "pct_stereotype_stderr,none": "N/A"},
        },
        "group_subtasks": {"suite": ["suite_a"]},
        "higher_is_better": {"quiz": {"acc": True}, "suite": {"acc": True}, "suite_a": {"acc": True}},
        "n-shot": {"quiz": 0, "suite_a": 5, "pairs": 0},
        "n-samples": {"quiz": {"effective": n}, "suite_a": {"effective": 100}, "pairs": {"effective": 50}},
        "versions": {"quiz": 1.0},
        "per_item": {"quiz": {"acc,none": {str(i): float(a) for i, a in enumerate(acc)}}},
    }


BASE_ACC = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1]
MODEL_ACC = [1, 0, 1, 0, 0, 0, 1, 1, 0, 1]


def test_rows_pair_items_and_fall_back_to_unpaired_errors():
    rows = {
        (r["task"], r["metric"]): r
        for r in compare(_raw(BASE_ACC, stereo=0.6, group_acc=0.5), _raw(MODEL_ACC, stereo=0.55, group_acc=0.45))
    }
    quiz = rows[("quiz", "acc")]
    assert quiz["base"] == 0.7 and quiz["model"] == 0.5 and quiz["change"] == pytest.approx(-0.2)
    diffs = [m - b for b, m in zip(BASE_ACC, MODEL_ACC)]  # two items lost, none gained
    mean = sum(diffs) / len(diffs)
    paired = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    assert quiz["change_stderr"] == pytest.approx(paired) and quiz["change_stderr_kind"] == "paired"
    assert quiz["change_stderr"] < math.hypot(quiz["base_stderr"], quiz["model_stderr"])  # pairing removes item noise
    assert quiz["items"] == 10 and quiz["num_fewshot"] == 0 and quiz["top_level"]
    suite = rows[("suite", "acc")]  # a group: no per-item scores of its own
    assert suite["change_stderr_kind"] == "unpaired" and suite["change_stderr"] == pytest.approx(math.hypot(0.01, 0.01))
    assert suite["items"] == 100 and suite["top_level"] and not rows[("suite_a", "acc")]["top_level"]
    pairs = rows[("pairs", "pct_stereotype")]  # "N/A" standard errors stay unknown, never zero
    assert pairs["change_stderr"] is None and pairs["higher_is_better"] is None
    no_base = compare(None, _raw(MODEL_ACC, stereo=0.5, group_acc=0.4))
    assert all(r["base"] is None and r["change"] is None and r["change_stderr"] is None for r in no_base)


def _likelihood(ppl_base: float, ppl_model: float, kl: float) -> dict:
    return {"base": {"perplexity": ppl_base}, "model": {"perplexity": ppl_model, "first_token_kl": kl}}


def test_gates_measure_drops_in_each_metrics_direction():
    rows = compare(_raw(BASE_ACC, stereo=0.6, group_acc=0.5), _raw(MODEL_ACC, stereo=0.55, group_acc=0.45))
    for r in rows:  # make the bias task's direction known, as lm-eval reports it for CrowS-Pairs
        if r["metric"] == "pct_stereotype":
            r["higher_is_better"] = False
    gates = check_gates(
        {"perplexity_pct": 2, "quiz": 0.1, "suite.acc": 0.1, "pairs": 0.0, "first_token_kl": 0.5},
        _likelihood(20.0, 20.5, 0.1),
        rows,
    )
    by_key = {g.key: g for g in gates}
    assert by_key["perplexity_pct"].drop == pytest.approx(2.5) and not by_key["perplexity_pct"].passed
    assert by_key["quiz"].drop == pytest.approx(0.2) and not by_key["quiz"].passed
    assert by_key["suite.acc"].drop == pytest.approx(0.05) and by_key["suite.acc"].passed
    assert by_key["pairs"].drop == pytest.approx(-0.05) and by_key["pairs"].passed  # less stereotyped: no drop
    assert by_key["first_token_kl"].passed
    from dataclasses import asdict

    failed = failures([asdict(g) for g in gates])
    assert len(failed) == 2 and "perplexity" in failed[0] and "max_drop.quiz" in failed[1]
    # a rise of exactly the limit passes; only a larger one fails
    assert check_gates({"perplexity_pct": 2.5}, _likelihood(20.0, 20.5, 0.0), [])[0].passed


def test_gate_keys_and_limits_are_checked_before_any_work():
    with pytest.raises(EditorError, match="'quizz' names no metric"):
        check_keys({"quizz": 0.1}, {"quiz"})
    check_keys({"quiz.acc_norm": 0.1, "perplexity_pct": 1}, {"quiz"})
    with pytest.raises(EditorError, match="compares with the base model"):
        check_keys({"perplexity_pct": 1}, set(), has_base=False)
    with pytest.raises(ValueError, match="an lm-eval task gate needs the task in lm_eval"):
        EvalSettings(max_drop={"mmlu": 0.02})
    with pytest.raises(ValueError, match="at least 0"):
        EvalSettings(max_drop={"perplexity_pct": -1})
    parser = argparse.ArgumentParser()
    add_flags(parser, EvalSettings)
    settings = from_flags(
        EvalSettings,
        parser.parse_args(["--lm-eval", "mmlu,x/task.yaml", "--max-drop", "mmlu=0.02,perplexity_pct=2"]),
    )
    assert settings.lm_eval == ["mmlu", "x/task.yaml"] and settings.max_drop == {"mmlu": 0.02, "perplexity_pct": 2.0}
    with pytest.raises(EditorError, match="--max-drop"):
        from_flags(EvalSettings, parser.parse_args(["--max-drop", "perplexity_pct"]))


def _lm_section(rows: list[dict]) -> dict:
    return {"version": "0.4.13", "backend": "hf", "num_fewshot": 0, "limit": None, "rows": rows, "tasks": ["quiz"]}


def test_model_index_has_one_result_per_task_and_metric():
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from tests.test_eval import _report

    data = _report().to_dict()
    data["lm_eval"] = _lm_section(
        compare(_raw(BASE_ACC, stereo=0.6, group_acc=0.5), _raw(MODEL_ACC, stereo=0.5, group_acc=0.4))
    )
    _, results = model_index_to_eval_results(model_index(data, "smol"))
    harness = {(r.dataset_type, r.metric_type): r for r in results if r.task_name == "lm-evaluation-harness"}
    assert set(harness) == {("quiz", "acc"), ("suite", "acc"), ("pairs", "pct_stereotype")}  # not suite_a
    assert harness[("quiz", "acc")].metric_value == 0.5 and harness[("quiz", "acc")].dataset_args == {"num_fewshot": 0}
    md = render_markdown(data)
    assert "| quiz | acc | 10 | 0.7000 | 0.5000 | -0.2000 ± 0.1333 | higher is better |" in md
    assert "| suite_a |" not in md


def _export_with_gates(root: Path, passed: bool) -> Path:
    from editor.pipeline.card import render_card
    from tests.tiny import build_model, save_model, tiny_configs

    # A real (tiny) checkpoint: push validates the weights before it reads the gates.
    export = save_model(build_model(tiny_configs()["llama"]), root / ("pass" if passed else "fail"))
    gate = {"key": "quiz", "label": "quiz acc", "base": 0.7, "model": 0.5, "drop": 0.2, "limit": 0.3 if passed else 0.1}
    gate["passed"] = passed
    manifest = {
        "editor_version": "0",
        "base_model": {"source": "builtin:x", "license": "apache-2.0"},
        "edits_described": ["zero heads"],
        "verification": {
            "transformers": {
                "passed": True,
                "prompts": 8,
                "max_logit_error": 0.0,
                "stored_dtype": "float32",
                "mean_first_token_kl": 0.0,
                "tolerance": 1e-3,
            }
        },
        "evaluation": {"summary": {"gates": [gate]}, "markdown": "numbers\n"},
    }
    (export / "editor_manifest.json").write_text(json.dumps(manifest))
    (export / "README.md").write_text(render_card(manifest, export.name))
    return export


def test_push_refuses_an_export_that_fails_its_gate(tmp_path):
    from tests.test_cli_errors import wedit

    failing = _export_with_gates(tmp_path, passed=False)
    assert "> **Fails its damage gate**: quiz acc dropped by 0.2, allowed 0.1." in (failing / "README.md").read_text()
    refused = wedit("push", str(failing), "--repo", "me/smol", "--dry-run")
    assert refused.returncode == 2 and "fails its damage gate" in refused.stderr
    assert "--allow-gate-failure" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    allowed = wedit("push", str(failing), "--repo", "me/smol", "--dry-run", "--allow-gate-failure")
    assert allowed.returncode == 0 and "model.safetensors" in allowed.stdout
    passing = _export_with_gates(tmp_path, passed=True)
    assert "damage gate" not in (passing / "README.md").read_text()
    assert wedit("push", str(passing), "--repo", "me/smol", "--dry-run").returncode == 0


def test_missing_extra_is_one_line_naming_the_install_command():
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"  # as if lm-eval were not installed
        "from editor.cli import main\n"
        "sys.exit(main(['eval', 'builtin:smollm2-135m-instruct', '--out', 'never-written', '--lm-eval', 'mmlu']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "wedit: error: --lm-eval needs lm-evaluation-harness, an optional extra: "
        "pip install 'wedit[lm-eval]' (lm-eval==0.4.13)"
    )
    assert not Path("never-written").exists()


def test_requests_are_counted_before_any_model(capsys):
    pytest.importorskip("lm_eval")
    from editor.evaluation.lm_eval import Harness

    harness = Harness(EvalSettings(lm_eval=[str(TASK)], lm_eval_limit=6, lm_eval_fewshot=2))
    count = harness.counts["wedit_general_knowledge"]
    assert count == {"docs": 6, "requests": 24, "by_type": {"loglikelihood": 24}, "num_fewshot": 2}
    out = capsys.readouterr().out
    assert "wedit_general_knowledge: 24 requests (loglikelihood 24) over 6 items, 2-shot" in out
    assert "total 24 per model, 48 for base and model" in out
    assert harness.task_names == {"wedit_general_knowledge"}
    with pytest.raises(EditorError, match="lm-eval task file not found"):
        Harness(EvalSettings(lm_eval=["no/such/task.yaml"]))
