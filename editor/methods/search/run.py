"""`wedit search`: build the inputs once, let Optuna propose trials, score each with hooks, choose, report.

A trial's two objectives, both minimised:

- bias: the select fold's remaining bias, relative to the base: the mean of |association gap| / |base gap|
  and |frame log-likelihood difference| / |base difference| (each a difference in nats between a
  stereotyped group and an unlinked one; the first on SeeGULL's templates, the second on sentence frames);
- damage: the relative rise of WikiText-2 perplexity.

Constraints (Optuna's ``constraints_func``): perplexity within ``damage_budget`` and first-token KL on
neutral prompts within ``kl_budget``. The chosen trial is the feasible one with the least bias that lowers
it by at least 5%; ties go to less damage. Only then is the test fold read: the base and the chosen plan are
scored on it, and on the build fold (in-distribution), with perplexity on WikiText-2 tokens no trial saw.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.core.hooks import hooked
from editor.core.model_info import ModelInfo
from editor.core.plan import Plan
from editor.core.prefix_cache import PrefixCache
from editor.data import wikitext_txt
from editor.data.seegull import load_seegull
from editor.data.splits import split_pairs
from editor.errors import EditorError
from editor.evaluation.heldout import FoldScores, Yardstick
from editor.evaluation.metrics import (
    concept_retention,
    first_token_kl,
    last_token_logprobs,
    perplexity,
    wikitext_tokens,
)
from editor.io.atomic import write_text
from editor.methods.search.contrasts import contrast_statements
from editor.methods.search.fits import fit_erasure_for_search, fit_unlink_for_search
from editor.methods.search.heads import association_head_scores
from editor.methods.search.identity import identity_covariances
from editor.methods.search.introspective import introspective_statements
from editor.methods.search.settings import SearchSettings
from editor.methods.search.space import SearchInputs, describe, starting_points, trial_edits
from editor.methods.steer.capture import capture, generic_stats
from editor.methods.steer.probes import mean_difference
from editor.methods.steer.statements import load_labelled

MIN_GAIN = 0.05  # a trial must remove at least this share of the bias to be chosen: noise is not a debiasing
NATS_FLOOR = 0.05  # a base frame difference smaller than this is no bias to measure a share of


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    label: str
    bias: float  # remaining share of the select fold's bias (1 = unchanged)
    damage: float  # relative perplexity rise
    gap: float
    frame_nats: float
    preference: float
    lm_score: float | None
    perplexity: float
    kl: float
    edits: int
    feasible: bool
    pareto: bool = False


@dataclass
class Measured:
    """One model (the base, or the base with the chosen plan hooked) on every fold and on damage."""

    folds: dict[str, FoldScores]
    perplexity: float  # on WikiText-2 tokens no trial was scored on
    kl: float
    retention: float  # concept retention hit rate over the six preset biases' neutral prompts


@dataclass
class SearchReport:
    base_select: FoldScores
    base_perplexity: float
    trials: list[TrialResult] = field(default_factory=list)
    chosen: TrialResult | None = None
    base: Measured | None = None
    export: Measured | None = None
    # method -> its best feasible trial (number) measured like the chosen plan; filled with report_methods
    per_method: dict[str, tuple[int, Measured]] = field(default_factory=dict)
    seconds: float = 0.0  # the search, the choice and its held-out measurement
    report_seconds: float = 0.0  # the per-method measurements (report_methods)
    damage_budget: float = 0.02
    kl_budget: float = 0.05


def default_layers(info: ModelInfo) -> list[int]:
    return list(range(int(info.num_layers * 0.3), int(info.num_layers * 0.9) + 1))


def run_search(
    model, tokenizer, info: ModelInfo, out: Path, settings: SearchSettings, *, progress: bool = True
) -> SearchReport:
    """Search, choose, report; write ``search.json``, ``pareto.png`` and (when a trial qualifies) ``plan.json``."""
    import optuna

    started = time.monotonic()
    layers = settings.layers or default_layers(info)
    for layer in layers:
        info.check_layer(layer, "layers entry")
    all_pairs = load_seegull(settings.seegull)
    tokens, generic, report_tokens = _text_budgets(tokenizer, settings)
    inputs = build_inputs(model, tokenizer, info, settings, layers, all_pairs, generic, progress)
    yard = Yardstick.build(all_pairs, {"select": (settings.select_pairs, settings.select_items)}, seed=settings.seed)
    base_lp = last_token_logprobs(model, tokenizer)
    report = SearchReport(
        yard.measure_fold(model, tokenizer, "select", lm_score=False),
        perplexity(model, tokens),
        damage_budget=settings.damage_budget,
        kl_budget=settings.kl_budget,
    )
    study = _optimise(model, tokenizer, info, settings, inputs, yard, tokens, base_lp, report, progress)
    report.trials = [_result(t) for t in study.trials if t.values is not None]
    _mark_pareto(report.trials)
    report.chosen = choose(report.trials)
    sizes = (settings.test_pairs, settings.test_items)
    full = Yardstick.build(all_pairs, {"build": sizes, "test": sizes}, seed=settings.seed)
    if report.chosen is not None:
        edits = trial_edits(optuna.trial.FixedTrial(report.chosen.params), inputs, settings, info)
        write_text(out / "plan.json", Plan(edits=edits).to_json() + "\n")
        report.base = _measure(model, tokenizer, full, report_tokens, base_lp)
        with hooked(model, edits, info):
            report.export = _measure(model, tokenizer, full, report_tokens, base_lp)
    report.seconds = time.monotonic() - started
    if settings.report_methods:
        report.base = report.base or _measure(model, tokenizer, full, report_tokens, base_lp)
        for method, best in best_per_method(report.trials).items():
            with hooked(model, trial_edits(optuna.trial.FixedTrial(best.params), inputs, settings, info), info):
                report.per_method[method] = (best.number, _measure(model, tokenizer, full, report_tokens, base_lp))
        report.report_seconds = time.monotonic() - started - report.seconds
    write_outputs(out, report, settings)
    return report


def _text_budgets(tokenizer, settings: SearchSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """WikiText-2 cut three ways: the trials' perplexity, whitening and head means, the chosen plan's report."""
    path = wikitext_txt(settings.wikitext)
    text = wikitext_tokens(tokenizer, path, settings.wiki_tokens + settings.generic_tokens + settings.report_tokens)
    edge = settings.wiki_tokens + settings.generic_tokens
    if len(text) - edge < 64:
        raise EditorError(f"{path}: too short for wiki_tokens + generic_tokens + report_tokens; lower them")
    return text[: settings.wiki_tokens], text[settings.wiki_tokens : edge], text[edge:]


def _optimise(model, tokenizer, info, settings, inputs, yard, tokens, base_lp, report, progress):
    """Run the Optuna study: each trial hooks its plan and scores the select fold, perplexity and KL."""
    import optuna

    base_select, base_ppl = report.base_select, report.base_perplexity
    prefix = PrefixCache(model, info)  # a trial at block L recomputes blocks L.. only; the rest is replayed

    def objective(trial) -> tuple[float, float]:
        edits = trial_edits(trial, inputs, settings, info)
        if not edits:  # e.g. no head with a positive score: nothing applied
            _constrain(trial, 0.0, 0.0)
            trial.set_user_attr("scores", None)
            return 1.0, 0.0
        with hooked(model, edits, info), prefix.clean_below(min(e.first_layer() for e in edits)):
            scores = yard.measure_fold(model, tokenizer, "select", lm_score=False)
            ppl = perplexity(model, tokens)
            kl = first_token_kl(base_lp, last_token_logprobs(model, tokenizer))
        damage = ppl / base_ppl - 1.0
        _constrain(trial, damage - settings.damage_budget, kl - settings.kl_budget)
        trial.set_user_attr("scores", {**asdict(scores), "perplexity": ppl, "kl": kl, "edits": len(edits)})
        return remaining_bias(scores, base_select), damage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.NSGAIISampler(seed=settings.seed)
        if settings.sampler == "nsga2"
        else optuna.samplers.TPESampler(seed=settings.seed)
    )
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for params in starting_points(settings, inputs.layers, info.num_layers):
        study.enqueue_trial(params)
    with tqdm(total=settings.trials, desc="search", unit="trial", disable=not progress) as bar:

        def tick(_study, trial) -> None:
            bar.update(1)
            bar.set_postfix_str(describe(trial.params)[:60])

        study.optimize(objective, n_trials=settings.trials, callbacks=[tick])
    return study


def _constrain(trial, perplexity_over: float, kl_over: float) -> None:
    """Tell the sampler how far over each budget a trial is (feasible at zero or less), and keep it for the report."""
    trial.set_constraint("perplexity", perplexity_over)
    trial.set_constraint("kl", kl_over)
    trial.set_user_attr("constraints", [perplexity_over, kl_over])


def _constraints(trial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [0.0, 0.0]))


# Methods whose trials read the contrast vectors or activations; the fitted and identity methods never do, so a
# search of only those skips the capture (about a minute on 2 cores).
VECTOR_METHODS = frozenset({"residual_add", "heads+residual_add", "selective_add", "ablate_direction", "steer2edit"})


def build_inputs(
    model, tokenizer, info: ModelInfo, settings: SearchSettings, layers, all_pairs, generic, progress: bool
) -> SearchInputs:
    """Vectors of every contrast at both sites, ordinary-text moments, head scores and means: the build fold only."""
    from editor.methods.attribute.removal import head_means

    build = split_pairs(all_pairs)["build"]
    methods = set(settings.methods)
    vectors, acts = {}, {}
    if methods & VECTOR_METHODS:
        for contrast in settings.contrasts:
            texts, labels = _statements(model, tokenizer, contrast, all_pairs, build, settings)
            captured = capture(model, info, tokenizer, texts, labels, progress=progress)
            acts[contrast] = captured
            for site in ("block", "attn", "mlp"):
                vectors[(contrast, site)] = mean_difference(captured, site=site)
    needs_stats = bool(methods & {"ablate_direction", "ablate_identity", "erase_identity", "steer2edit"})
    stats = generic_stats(model, info, generic, layers if needs_stats else [])
    identity = {}
    groups = sorted({p.identity for p in build.pairs})
    if "ablate_identity" in methods:
        identity = identity_covariances(model, info, tokenizer, groups, layers)
    erasure = fit_erasure_for_search(
        model, tokenizer, info, settings, list(layers), all_pairs, build, generic, stats, identity, progress
    )
    unlink = fit_unlink_for_search(model, tokenizer, info, settings, all_pairs, build, generic, progress)
    heads = any(m.startswith("heads") for m in methods)
    scores = (
        association_head_scores(model, info, tokenizer, all_pairs, build, settings.head_pairs, seed=settings.seed)
        if heads
        else np.zeros((info.num_layers, info.num_heads))
    )
    means = head_means(model, info, generic) if heads else np.zeros((info.num_layers, info.num_heads, info.head_dim))
    return SearchInputs(list(layers), vectors, acts, stats, scores, means, identity, erasure, unlink)


def _statements(model, tokenizer, contrast, all_pairs, build, settings: SearchSettings):
    """The labelled texts of one contrast: the model's own choices, the user's file, or written from the fold."""
    if contrast == "introspective":
        return introspective_statements(model, tokenizer, all_pairs, build, settings.statements, settings.seed)
    if contrast == "data":
        return load_labelled(Path(str(settings.data)))
    return contrast_statements(contrast, all_pairs, build, settings.statements, settings.seed)


def remaining_bias(scores: FoldScores, base: FoldScores) -> float:
    """The share of the base's select-fold bias left: the mean over the two likelihood differences that exist."""
    shares = []
    if abs(base.gap) > 1e-9:
        shares.append(abs(scores.gap) / abs(base.gap))
    if abs(base.preference_nats) >= NATS_FLOOR:
        shares.append(abs(scores.preference_nats) / abs(base.preference_nats))
    return float(np.mean(shares)) if shares else 1.0


def _result(trial) -> TrialResult:
    scores = trial.user_attrs.get("scores") or {}
    bias, damage = trial.values
    constraints = _constraints(trial)
    return TrialResult(
        trial.number,
        dict(trial.params),
        describe(trial.params),
        float(bias),
        float(damage),
        scores.get("gap", float("nan")),
        scores.get("preference_nats", float("nan")),
        scores.get("preference", float("nan")),
        scores.get("lm_score"),
        scores.get("perplexity", float("nan")),
        scores.get("kl", float("nan")),
        scores.get("edits", 0),
        bool(scores) and all(c <= 0 for c in constraints),
    )


def _mark_pareto(trials: list[TrialResult]) -> None:
    for t in trials:
        t.pareto = t.feasible and not any(
            o.feasible and o.bias <= t.bias and o.damage <= t.damage and (o.bias < t.bias or o.damage < t.damage)
            for o in trials
        )


def best_per_method(trials: list[TrialResult]) -> dict[str, TrialResult]:
    """Each method's feasible trial with the least bias (ties to less damage); methods with none are left out."""
    best: dict[str, TrialResult] = {}
    for t in trials:
        method = t.params["method"]
        if t.feasible and (method not in best or (t.bias, t.damage) < (best[method].bias, best[method].damage)):
            best[method] = t
    return best


def choose(trials: list[TrialResult]) -> TrialResult | None:
    """The feasible trial with the least remaining bias (at most 1 - MIN_GAIN); ties to less damage."""
    eligible = [t for t in trials if t.feasible and t.bias <= 1.0 - MIN_GAIN]
    return min(eligible, key=lambda t: (t.bias, t.damage), default=None)


@torch.no_grad()
def _measure(model, tokenizer, yard: Yardstick, tokens, base_lp) -> Measured:
    from editor.data.biases import PRESETS
    from editor.evaluation.prompts import concept_probes

    retention = concept_retention(model, tokenizer, concept_probes(sorted(PRESETS)))
    return Measured(
        yard.measure(model, tokenizer),
        perplexity(model, tokens),
        first_token_kl(base_lp, last_token_logprobs(model, tokenizer)),
        retention.hit_rate,
    )


def write_outputs(out: Path, report: SearchReport, settings: SearchSettings) -> None:
    data = {**asdict(report), "settings": settings.model_dump()}
    write_text(out / "search.json", json.dumps(data, indent=1, default=float) + "\n")
    pareto_figure(report, out / "pareto.png")


def pareto_figure(report: SearchReport, path: Path) -> None:
    from editor.io.figures import figure

    # A trial that wrecks the model (+40,000% perplexity happens) would squash every other point against the
    # budget line: the axes stop a little past the budget and what lies beyond is drawn on the edge.
    x_edge = max(500 * report.damage_budget, *(120 * t.damage for t in report.trials if t.feasible), 1.0)
    y_edge = 1.5
    beyond = sum(100 * t.damage > x_edge or t.bias > y_edge for t in report.trials)
    with figure(path, (6.5, 4.2)) as (_fig, ax):
        methods = sorted({t.params["method"] for t in report.trials})
        for method, marker in zip(methods, "osD^v<>"):
            pts = [t for t in report.trials if t.params["method"] == method]
            ax.scatter(
                [min(100 * t.damage, x_edge) for t in pts],
                [min(t.bias, y_edge) for t in pts],
                marker=marker,
                label=method,
                alpha=[1.0 if t.feasible else 0.35 for t in pts],
            )
        front = sorted((t for t in report.trials if t.pareto), key=lambda t: t.damage)
        ax.plot([100 * t.damage for t in front], [t.bias for t in front], color="black", lw=1, label="Pareto front")
        if report.chosen is not None:
            c = report.chosen
            ax.scatter([100 * c.damage], [c.bias], marker="*", s=220, color="gold", edgecolors="black", label="chosen")
            ax.annotate(c.label, (100 * c.damage, c.bias), fontsize=6, xytext=(4, -10), textcoords="offset points")
        ax.axvline(100 * report.damage_budget, color="grey", ls="--", label=f"+{report.damage_budget:.0%} budget")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("WikiText-2 perplexity change (%)")
        ax.set_ylabel("select-fold bias left (1 = base)")
        edge = f"; {beyond} beyond the axes, drawn on their edge" if beyond else ""
        ax.set_title(f"search: {len(report.trials)} trials (faded: over a budget{edge})", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
