"""Judged generations: the chats each model answers, the generation backends, the judge's verdicts, their summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from editor.errors import EditorError
from editor.evaluation.prompts import EvalPrompt
from editor.evaluation.report import ConditionResult
from editor.evaluation.settings import EvalSettings


@dataclass
class Job:
    role: str
    condition: str
    prompt: EvalPrompt
    sent: str  # the user turn actually sent


def jobs_for(prompts: list[EvalPrompt], roles: list[str], baselines: bool) -> list[Job]:
    from editor.evaluation.baselines import BASELINES, wrap

    jobs = [Job(role, "plain", p, p.text) for role in roles for p in prompts]
    if baselines:
        # The baselines are alternatives to editing: they prompt the unedited model.
        target = "base" if "base" in roles else "model"
        jobs += [Job(target, b, p, wrap(b, p.text, p.quality)) for b in BASELINES for p in prompts]
    return jobs


def generator_for(role: str, path: Path, loaded, settings: EvalSettings, progress: bool):
    from editor.engines.generation import OpenAIGenerator, TransformersGenerator, VllmGenerator

    if settings.generator == "transformers":
        return TransformersGenerator(*loaded, batch_size=settings.gen_batch_size, progress=progress)
    if settings.generator == "vllm":
        return VllmGenerator(path, progress=progress, tensor_parallel_size=settings.tensor_parallel_size)
    name = settings.gen_model if role == "model" else settings.base_gen_model
    if not name:
        raise EditorError(
            "--generator openai with --base needs --base-gen-model NAME (the base as served at --gen-endpoint)"
        )
    return OpenAIGenerator(settings.gen_endpoint, name, progress=progress, api_key_env=settings.api_key_env)


def _mean_by(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    groups: dict[str, list[int]] = {}
    for r in rows:
        if r["strength"] is not None:
            groups.setdefault(r[key], []).append(r["strength"])
    return {k: round(float(np.mean(v)), 4) for k, v in groups.items()}


def summarize(jobs: list[Job], rows: list[dict[str, Any]]) -> list[ConditionResult]:
    results = []
    for key in dict.fromkeys((j.role, j.condition) for j in jobs):
        mine = [r for j, r in zip(jobs, rows) if (j.role, j.condition) == key]
        scores = [r["strength"] for r in mine if r["strength"] is not None]

        results.append(
            ConditionResult(
                condition=key[1],
                role=key[0],
                prompts=len(mine),
                scored=len(scores),
                parse_failures=sum(r["judge_error"] is not None for r in mine),
                format_misses=sum(not r["format_ok"] for r in mine),
                mean_strength=round(float(np.mean(scores)), 4) if scores else None,
                distribution=[scores.count(level) for level in range(4)],
                by_bias=_mean_by(mine, "bias"),
                by_family=_mean_by(mine, "family"),
            )
        )
    return results


def judge_replies(
    jobs: list[Job], replies: dict[int, str], settings: EvalSettings, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Have the judge rate every reply (the baselines' debiased part only); one row per job, and the request counts."""
    from editor.engines.openai_client import ChatClient
    from editor.evaluation.baselines import extract
    from editor.evaluation.judge import JudgeItem, judge_all

    judged = [extract(j.condition, replies[i]) for i, j in enumerate(jobs)]
    client = ChatClient(
        settings.judge_endpoint or "",
        api_key_env=settings.api_key_env,
        timeout=300.0,
        concurrency=settings.judge_workers,
        purpose="judge",
        hint="check --judge-endpoint, --judge-model and the API key variable",
    )
    with client:
        items = [JudgeItem(j.prompt.text, text, j.prompt.quality) for j, (text, _) in zip(jobs, judged)]
        verdicts = judge_all(client, settings.judge_model or "", items, progress=progress)
    rows = []
    for i, (job, (text, ok), verdict) in enumerate(zip(jobs, judged, verdicts)):
        rows.append(
            {
                "role": job.role,
                "condition": job.condition,
                "bias": job.prompt.bias,
                "family": job.prompt.family,
                "group": job.prompt.group,
                "prompt": job.sent,
                "reply": replies[i],
                "judged_text": text,
                "format_ok": ok,
                "strength": verdict.strength,
                "analysis": verdict.verdict.analysis if verdict.verdict else None,
                "matched_string": verdict.verdict.matched_string if verdict.verdict else None,
                "judge_raw": verdict.raw,
                "judge_error": verdict.error,
            }
        )
    return rows, client.stats.as_dict()
