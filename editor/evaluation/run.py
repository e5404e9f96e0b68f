"""`wedit eval`: measure bias and damage of a model (and its base), and record the results in an export.

Public entry points (stable; the recipe runner calls them):

- ``run_eval(model_dir, base_dir, out_dir, settings) -> EvalReport`` measures
  the likelihood metrics of ``model_dir`` (and of ``base_dir`` when given:
  before/after columns and first-token KL), and, when ``settings`` names a
  judge, generates on the 18 prompt families with the plain prompts (both
  models) and the three prompting baselines (on the base, or on the model when
  there is no base), and has the judge rate every reply 0-3. It writes
  ``eval.json``, ``eval.md``, ``eval.png`` and ``generations.jsonl`` into
  ``out_dir`` (built in a temporary sibling and renamed into place) and never
  modifies either model directory.
- ``record_eval(export_dir, report)`` stores a report in an export written by
  `wedit export`: ``editor_manifest.json`` gains ``evaluation`` and
  ``model_index``, ``figures/eval.png`` is added and ``README.md`` re-rendered
  (before/after table and a model-index block). Each file is replaced
  atomically; weights are never touched.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from editor import __version__
from editor.data import wikitext_txt
from editor.data.biases import PRESETS
from editor.data.seegull import StereotypePair, load_seegull, not_stereotyped_with, stereotypes
from editor.errors import EditorError
from editor.evaluation.gates import check_gates, check_keys
from editor.evaluation.generations import generator_for, jobs_for, judge_replies, summarize
from editor.evaluation.heldout import Yardstick
from editor.evaluation.metrics import (
    SentencePair,
    association_gap,
    concept_retention,
    first_token_kl,
    last_token_logprobs,
    pairwise_preference,
    perplexity,
    wikitext_tokens,
)
from editor.evaluation.prompts import EvalPrompt, build_prompts, concept_probes
from editor.evaluation.report import (
    SOURCES,
    EvalReport,
    LikelihoodMetrics,
    model_index,
    plot_report,
    render_markdown,
)
from editor.evaluation.settings import EvalSettings
from editor.evaluation.world import WorldYardstick
from editor.io.atomic import replace_file, staged_directory, write_text

FIGURE = "figures/eval.png"


@dataclass
class _Data:
    """Inputs shared by both models, chosen once so base and model see the same items."""

    all_pairs: list[StereotypePair]
    gap_pairs: list[StereotypePair]
    bias_pairs: dict[str, list[StereotypePair]]
    sentence_pairs: list[SentencePair]
    wikitext: Path
    prompts: list[EvalPrompt] = field(default_factory=list)
    yardstick: Yardstick | None = None  # build and test folds of the identity-and-attribute split
    world: WorldYardstick | None = None  # the world-shaped yardstick's test fold


def load_sentence_pairs(path: Path) -> list[SentencePair]:
    """A CSV with columns ``more,less`` (or CrowS-Pairs' ``sent_more,sent_less``); extra columns are ignored."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise EditorError(f"{path}: sentence-pairs CSV not found; check --pairs-csv")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        names = next(
            ((a, b) for a, b in (("more", "less"), ("sent_more", "sent_less")) if a in fields and b in fields), None
        )
        if names is None:
            raise EditorError(
                f"{path}: needs columns more,less (or sent_more,sent_less); found {', '.join(fields) or 'none'}"
            )
        pairs = [
            SentencePair(row[names[0]].strip(), row[names[1]].strip())
            for row in reader
            if row[names[0]] and row[names[1]]
        ]
    if not pairs:
        raise EditorError(f"{path}: no sentence pairs")
    return pairs


def seegull_sentence_pairs(all_pairs: list[StereotypePair], n: int, seed: int = 1) -> list[SentencePair]:
    """Minimal pairs from held-out stereotypes: the same sentence about the stereotyped and an unlinked identity."""
    rng = random.Random(seed)
    held = [p for p in stereotypes(all_pairs) if p.held_out]
    rng.shuffle(held)
    out = []
    for pair in held:
        pool = not_stereotyped_with(all_pairs, pair.attribute)
        if not pool:
            continue
        other = rng.choice(pool)
        out.append(
            SentencePair(
                f"Many {pair.identity} people are {pair.attribute}.", f"Many {other} people are {pair.attribute}."
            )
        )
        if len(out) == n:
            break
    return out


def _prepare(settings: EvalSettings) -> _Data:
    all_pairs = load_seegull(settings.seegull)
    held = [p for p in stereotypes(all_pairs) if p.held_out]
    random.Random(0).shuffle(held)  # the same draw as `wedit steer`, so the numbers compare
    bias_pairs = {}
    for name in settings.bias_names:
        attributes = set(PRESETS[name].seegull_attributes)
        linked = sorted(
            (p for p in stereotypes(all_pairs) if p.attribute in attributes),
            key=lambda p: (-p.votes, p.identity, p.attribute),
        )
        if linked:
            bias_pairs[name] = linked[: settings.bias_gap_pairs]
    wikitext = wikitext_txt(settings.wikitext)
    sentence_pairs = (
        load_sentence_pairs(Path(settings.pairs_csv))
        if settings.pairs_csv
        else seegull_sentence_pairs(all_pairs, settings.pairwise_pairs)
    )
    data = _Data(all_pairs, held[: settings.gap_pairs], bias_pairs, sentence_pairs, wikitext)
    if settings.held_out_pairs:
        sizes = (settings.held_out_pairs, settings.held_out_items)
        data.yardstick = Yardstick.build(all_pairs, {"build": sizes, "test": sizes}, batch_size=settings.batch_size)
    if settings.world:
        from editor.data.world import load_world

        data.world = WorldYardstick.build(
            load_world(settings.seegull),
            "test",
            settings.world,
            seed=settings.seed,
            swaps=settings.world_swaps,
            batch_size=settings.batch_size,
        )
    if settings.generation:
        for name in settings.bias_names:
            data.prompts += build_prompts(
                PRESETS[name],
                all_pairs,
                groups_per_bias=settings.groups_per_bias,
                families=settings.family_names,
                seed=settings.seed,
            )
    return data


def _load(path: Path):
    from editor.engines.loading import load_model, load_tokenizer

    return load_model(path), load_tokenizer(path)


def likelihood_metrics(model, tokenizer, data: _Data, settings: EvalSettings, base_lp: torch.Tensor | None):
    """All likelihood metrics of one loaded model, plus its neutral-prompt log-probs (the base's are KL's reference)."""
    start = time.perf_counter()
    bs = settings.batch_size
    gap = association_gap(model, tokenizer, data.all_pairs, data.gap_pairs, batch_size=bs)
    bias_gaps = {
        name: association_gap(model, tokenizer, data.all_pairs, pairs, batch_size=bs).mean
        for name, pairs in data.bias_pairs.items()
    }
    pref = pairwise_preference(model, tokenizer, data.sentence_pairs, bs)
    concept = concept_retention(model, tokenizer, concept_probes(settings.bias_names))
    tokens = wikitext_tokens(tokenizer, data.wikitext, settings.wiki_tokens)
    ppl = perplexity(model, tokens)
    lp = last_token_logprobs(model, tokenizer)
    kl = first_token_kl(base_lp, lp) if base_lp is not None else None
    held_out = (
        {fold: asdict(scores) for fold, scores in data.yardstick.measure(model, tokenizer).items()}
        if data.yardstick
        else {}
    )
    world = {key: asdict(score) for key, score in data.world.measure(model, tokenizer).items()} if data.world else {}
    metrics = LikelihoodMetrics(
        association_gap=gap.mean,
        association_gap_pairs=gap.pairs,
        bias_gaps=bias_gaps,
        pairwise_rate=pref.rate,
        pairwise_mean_diff=pref.mean_diff,
        pairwise_pairs=pref.pairs,
        concept_hit_rate=concept.hit_rate,
        concept_logprob=concept.mean_logprob,
        concept_prompts=concept.prompts,
        perplexity=ppl,
        wiki_tokens=len(tokens),
        first_token_kl=kl,
        seconds=round(time.perf_counter() - start, 1),
        held_out=held_out,
        world=world,
    )
    return metrics, lp, concept.continuations


def run_eval(
    model_dir: Path,
    base_dir: Path | None,
    out_dir: Path,
    settings: EvalSettings | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``model_dir`` (against ``base_dir`` if given) into ``out_dir``; see the module docstring."""
    from editor.engines.generation import GenerationParams
    from editor.engines.loading import check_checkpoint

    settings = settings or EvalSettings()
    settings.check_machine()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    base_dir = Path(base_dir) if base_dir else None
    for path in filter(None, (model_dir, base_dir)):
        if not (path / "config.json").is_file():
            raise EditorError(f"{path}: not a checkpoint directory (no config.json)")
        check_checkpoint(path)  # before any work: vLLM generation would otherwise be the first to read it
    data = _prepare(settings)
    harness = _harness(settings, base_dir)  # lm-eval tasks loaded and their requests counted before any model
    roles = (["base"] if base_dir else []) + ["model"]
    paths = {"base": base_dir, "model": model_dir}
    jobs = jobs_for(data.prompts, roles, settings.baselines) if settings.generation else []
    params = GenerationParams(settings.max_new_tokens, settings.temperature, settings.seed)

    durations: dict[str, float] = {}
    likelihood: dict[str, LikelihoodMetrics] = {}
    concept_texts: dict[str, list[str]] = {}
    replies: dict[int, str] = {}
    judge_requests: dict[str, Any] = {}
    base_lp = None
    with staged_directory(out_dir, force) as tmp:
        for role in roles:
            start = time.perf_counter()
            loaded = _load(paths[role])
            likelihood[role], lp, concept_texts[role] = likelihood_metrics(*loaded, data, settings, base_lp)
            base_lp = lp if role == "base" else base_lp
            durations[f"likelihood_{role}_s"] = round(time.perf_counter() - start, 1)
            if harness is not None:
                harness.run(role, paths[role], loaded)
            mine = [i for i, j in enumerate(jobs) if j.role == role]
            if mine:
                start = time.perf_counter()
                generator = generator_for(role, paths[role], loaded, settings, progress)
                texts = generator.generate([[{"role": "user", "content": jobs[i].sent}] for i in mine], params)
                replies.update(zip(mine, texts))
                durations[f"generation_{role}_s"] = round(time.perf_counter() - start, 1)
            del loaded

        rows: list[dict[str, Any]] = []
        if jobs:
            start = time.perf_counter()
            rows, judge_requests = judge_replies(jobs, replies, settings, progress)
            durations["judge_s"] = round(time.perf_counter() - start, 1)
        lm_section = harness.summary() if harness is not None else None
        like = {role: asdict(m) for role, m in likelihood.items()}
        gates = check_gates(settings.max_drop, like, lm_section["rows"] if lm_section else [])
        report = _report(model_dir, base_dir, settings, likelihood, jobs, rows, judge_requests, durations)
        report.lm_eval, report.gates = lm_section, gates
        data_dict = report.to_dict()
        data_dict["concept_continuations"] = concept_texts
        write_text(tmp / "eval.json", json.dumps(data_dict, indent=2) + "\n")
        write_text(tmp / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        plot_report(data_dict, tmp / "eval.png")
        write_text(tmp / "eval.md", f"# Evaluation of {model_dir.name}\n\n" + render_markdown(data_dict, "eval.png"))
    return report


def _harness(settings: EvalSettings, base_dir: Path | None):
    """The lm-eval comparison when tasks are asked for (lm-eval imported only then); damage gates checked first."""
    harness = None
    if settings.lm_eval:
        from editor.evaluation.lm_eval import Harness

        harness = Harness(settings)
    if settings.max_drop:
        check_keys(settings.max_drop, harness.task_names if harness else set(), has_base=base_dir is not None)
    return harness


def _report(
    model_dir: Path,
    base_dir: Path | None,
    settings: EvalSettings,
    likelihood: dict[str, LikelihoodMetrics],
    jobs: list,
    rows: list[dict[str, Any]],
    judge_requests: dict[str, Any],
    durations: dict[str, float],
) -> EvalReport:
    notes = []
    if not settings.generation:
        notes.append("generation metrics skipped: no judge given (--judge-endpoint, --judge-model)")
    failures = sum(r["judge_error"] is not None for r in rows)
    if failures:
        notes.append(
            f"{failures} of {len(rows)} judge replies could not be parsed; they are counted, not scored (generations.jsonl has them)"
        )
    judge = None
    if settings.generation:
        judge = {
            "endpoint": settings.judge_endpoint,
            "model": settings.judge_model,
            "api_key_env": settings.api_key_env,
        }
        judge.update(judge_requests)
    sources = list(SOURCES)
    if settings.pairs_csv:
        sources.append(f"sentence pairs from {Path(settings.pairs_csv).name} (supplied by the user)")
    names = settings.family_names
    return EvalReport(
        model=str(model_dir),
        base=str(base_dir) if base_dir else None,
        likelihood=likelihood,
        generation=summarize(jobs, rows),
        judge=judge,
        settings={
            **settings.model_dump(),
            "biases": settings.bias_names,
            "families": len(names),
            "family_names": names,
        },
        durations=durations,
        notes=notes,
        sources=sources,
        editor_version=__version__,
    )


def record_eval(export_dir: Path, report: EvalReport, figure: Path | None = None) -> dict[str, Any]:
    """Store ``report`` in an export's manifest and card (see the module docstring); returns the new manifest."""
    from editor.io.manifest import base_name, portable, read_manifest, write_manifest
    from editor.pipeline.card import render_card

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    data = portable(report.to_dict(), export_dir.absolute().parent)  # published: no local paths
    named = base_name(manifest, Path(report.base)) if report.base else None
    if named:
        data["base"] = named
    shown = None
    if figure is not None and Path(figure).is_file():
        (export_dir / "figures").mkdir(exist_ok=True)
        replace_file(export_dir / FIGURE, lambda tmp: shutil.copyfile(figure, tmp))
        shown = FIGURE  # linked from the evaluation section, not added to the figure gallery
    manifest["evaluation"] = {
        "summary": data,
        "markdown": render_markdown(data, shown),
    }
    manifest["model_index"] = model_index(data, export_dir.name)
    write_manifest(export_dir, manifest)
    write_text(export_dir / "README.md", render_card(manifest, export_dir.name))
    return manifest
