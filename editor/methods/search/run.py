"""`wedit search`: prepare every named method once, let Optuna propose trials, score each with hooks, choose,
report.

A trial's two objectives, both minimised:

- bias: the select fold's remaining bias, relative to the base: the mean of |association gap| / |base gap|
  and |frame log-likelihood difference| / |base difference| (each a difference in nats between a
  stereotyped group and an unlinked one; the first on SeeGULL's templates, the second on sentence frames);
- damage: the relative rise of WikiText-2 perplexity.

Constraints (Optuna's ``constraints_func``): perplexity within ``damage_budget`` and first-token KL on
neutral prompts within ``kl_budget``. The chosen trial is the feasible one with the least bias that lowers
it by at least 5% (``methods.tradeoff``); ties go to less damage. Only then is the test fold read: the base and
the chosen plan are scored on it, and on the build fold (in-distribution), with perplexity on WikiText-2 tokens
no trial saw.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from editor.core.hooks import hooked
from editor.core.model_info import ModelInfo
from editor.core.plan import Plan
from editor.core.prefix_cache import PrefixCache
from editor.edits import Edit
from editor.errors import RefusedEdit
from editor.evaluation.heldout import FoldScores, Yardstick, measure
from editor.evaluation.metrics import first_token_kl, last_token_logprobs, perplexity
from editor.io.atomic import write_text
from editor.methods import tradeoff
from editor.methods.inputs import build_fold, default_layers, report_yardstick, text_budget
from editor.methods.search.context import SearchContext
from editor.methods.search.methods import SearchMethod
from editor.methods.search.report import SearchReport, TrialResult, write_outputs
from editor.methods.search.settings import SearchOptions, method_objects

NATS_FLOOR = 0.05  # a base frame difference smaller than this is no bias to measure a share of


@dataclass
class Prepared:
    """The searched methods by name, each with the state its ``prepare`` returned."""

    methods: dict[str, SearchMethod]
    states: dict[str, Any]

    def edits(self, trial) -> list[Edit]:
        """The plan of one trial (an optuna Trial, or a FixedTrial replaying recorded parameters)."""
        name = trial.suggest_categorical("method", list(self.methods))
        return self.methods[name].suggest(trial, self.states[name])

    def describe(self, params: dict[str, Any]) -> str:
        """A trial's parameters in words, for tables and the plot."""
        return " ".join([params["method"], *self.methods[params["method"]].describe(params)])


def prepare(context: SearchContext, registry: Mapping[str, type[SearchMethod]] | None = None) -> Prepared:
    """Every named method's ``prepare``, once, in the order the settings name them."""
    objects = {method.name: method for method in method_objects(context.settings, registry)}
    order = list(getattr(context.settings, "methods"))  # noqa: B009 (a field of the type built from the registry)
    methods = {name: objects[name] for name in order}
    return Prepared(methods, {name: method.prepare(context) for name, method in methods.items()})


def run_search(
    model,
    tokenizer,
    info: ModelInfo,
    out: Path,
    settings: SearchOptions,
    *,
    progress: bool = True,
    registry: Mapping[str, type[SearchMethod]] | None = None,
) -> SearchReport:
    """Search, choose, report; write ``search.json``, ``pareto.png`` and (when a trial qualifies) ``plan.json``."""
    import optuna

    started = time.monotonic()
    layers = settings.layers or default_layers(info)
    for layer in layers:
        info.check_layer(layer, "layers entry")
    all_pairs, build = build_fold(settings)
    text = text_budget(tokenizer, settings)
    context = SearchContext(model, tokenizer, info, settings, list(layers), all_pairs, build, text.generic, progress)
    prepared = prepare(context, registry)
    yard = Yardstick.build(all_pairs, {"select": (settings.select_pairs, settings.select_items)}, seed=settings.seed)
    base_lp = last_token_logprobs(model, tokenizer)
    report = SearchReport(
        yard.measure_fold(model, tokenizer, "select", lm_score=False),
        perplexity(model, text.trials),
        damage_budget=settings.damage_budget,
        kl_budget=settings.kl_budget,
    )
    study = _optimise(context, prepared, yard, text.trials, base_lp, report)
    report.trials = [_result(t, prepared) for t in study.trials if t.values is not None]
    mark_pareto(report.trials)
    report.chosen = choose(report.trials, settings.damage_budget)
    full = report_yardstick(all_pairs, settings)
    if report.chosen is not None:
        edits = prepared.edits(optuna.trial.FixedTrial(report.chosen.params))
        write_text(out / "plan.json", Plan(edits=edits).to_json() + "\n")
        report.base = measure(model, tokenizer, full, text.report, base_lp)
        with hooked(model, edits, info):
            report.export = measure(model, tokenizer, full, text.report, base_lp)
    report.seconds = time.monotonic() - started
    if settings.report_methods:
        report.base = report.base or measure(model, tokenizer, full, text.report, base_lp)
        for method, best in best_per_method(report.trials).items():
            with hooked(model, prepared.edits(optuna.trial.FixedTrial(best.params)), info):
                report.per_method[method] = (best.number, measure(model, tokenizer, full, text.report, base_lp))
        report.report_seconds = time.monotonic() - started - report.seconds
    write_outputs(out, report, settings)
    return report


def _optimise(context: SearchContext, prepared: Prepared, yard: Yardstick, tokens, base_lp, report: SearchReport):
    """Run the Optuna study: each trial hooks its plan and scores the select fold, perplexity and KL."""
    import optuna

    model, tokenizer, info, settings = context.model, context.tokenizer, context.info, context.settings
    base_select, base_ppl = report.base_select, report.base_perplexity
    prefix = PrefixCache(model, info)  # a trial at block L recomputes blocks L.. only; the rest is replayed

    def objective(trial) -> tuple[float, float]:
        edits = prepared.edits(trial)
        if not edits:  # e.g. no head with a positive score: nothing applied
            _constrain(trial, 0.0, 0.0)
            trial.set_user_attr("scores", None)
            return 1.0, 0.0
        try:
            for edit in edits:
                edit.validate_for(info)
        except RefusedEdit as err:  # e.g. a residual add on a family with no bias to carry it: not a result
            report.refused.setdefault(trial.params["method"], str(err))
            raise optuna.TrialPruned() from None
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
    for name, method in prepared.methods.items():
        for params in method.seeds(context):
            study.enqueue_trial({"method": name, **params})
    with tqdm(total=settings.trials, desc="search", unit="trial", disable=not context.progress) as bar:

        def tick(_study, trial) -> None:
            bar.update(1)
            bar.set_postfix_str(prepared.describe(trial.params)[:60])

        study.optimize(objective, n_trials=settings.trials, callbacks=[tick])
    return study


def _constrain(trial, perplexity_over: float, kl_over: float) -> None:
    """Tell the sampler how far over each budget a trial is (feasible at zero or less), and keep it for the report."""
    trial.set_constraint("perplexity", perplexity_over)
    trial.set_constraint("kl", kl_over)
    trial.set_user_attr("constraints", [perplexity_over, kl_over])


def remaining_bias(scores: FoldScores, base: FoldScores) -> float:
    """The share of the base's select-fold bias left: the mean over the two likelihood differences that exist."""
    shares = []
    if abs(base.gap) > 1e-9:
        shares.append(abs(scores.gap) / abs(base.gap))
    if abs(base.preference_nats) >= NATS_FLOOR:
        shares.append(abs(scores.preference_nats) / abs(base.preference_nats))
    return float(np.mean(shares)) if shares else 1.0


def _result(trial, prepared: Prepared) -> TrialResult:
    scores = trial.user_attrs.get("scores") or {}
    bias, damage = trial.values
    constraints = list(trial.user_attrs.get("constraints", [0.0, 0.0]))
    return TrialResult(
        number=trial.number,
        params=dict(trial.params),
        label=prepared.describe(trial.params),
        bias=float(bias),
        damage=float(damage),
        gap=scores.get("gap", float("nan")),
        frame_nats=scores.get("preference_nats", float("nan")),
        preference=scores.get("preference", float("nan")),
        lm_score=scores.get("lm_score"),
        perplexity=scores.get("perplexity", float("nan")),
        kl=scores.get("kl", float("nan")),
        edits=scores.get("edits", 0),
        feasible=bool(scores) and all(c <= 0 for c in constraints),
    )


def mark_pareto(trials: list[TrialResult]) -> None:
    """Feasible trials no feasible trial beats on both bias and damage."""
    for trial, front in zip(
        trials, tradeoff.pareto_mask([(t.bias, t.damage) for t in trials], [t.feasible for t in trials])
    ):
        trial.pareto = front


def best_per_method(trials: list[TrialResult]) -> dict[str, TrialResult]:
    """Each method's feasible trial with the least bias (ties to less damage); methods with none are left out."""
    best: dict[str, TrialResult] = {}
    for t in trials:
        method = t.params["method"]
        if t.feasible and (method not in best or (t.bias, t.damage) < (best[method].bias, best[method].damage)):
            best[method] = t
    return best


def choose(trials: list[TrialResult], damage_budget: float = float("inf")) -> TrialResult | None:
    """The feasible trial with the least remaining bias, at most 1 - ``tradeoff.MIN_GAIN``; ties to less damage."""
    rule = tradeoff.Rule(1.0, lambda t: t.bias, lambda t: t.damage, damage_budget, inside=lambda t: t.feasible)
    return rule.choose(trials)
