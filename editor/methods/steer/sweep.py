"""`wedit steer`: vectors from SeeGULL statements, a hooked sweep of layer and strength, and three plans.

Every candidate is applied with run-time hooks (no export per point) and
scored on SeeGULL pairs held out from vector building (association gap) and
on damage (WikiText-2 perplexity, first-token KL on neutral prompts). For each
bake, the chosen point is one whose perplexity rises
by at most the damage budget, provided it lowers the gap by at least 5%; among
those the gap closest to zero wins (a large negative gap is the stereotype
reversed). Steer2Edit's strengths are swept on their own scale: its edits act
on the stereotype contrast itself and overshoot at residual-add strengths.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.core.hooks import hooked
from editor.core.model_info import ModelInfo
from editor.core.plan import Plan
from editor.core.prefix_cache import PrefixCache
from editor.data import wikitext_txt
from editor.data.seegull import StereotypePair, load_seegull, stereotypes
from editor.evaluation.metrics import association_gap, first_token_kl, last_token_logprobs, perplexity, wikitext_tokens
from editor.io.atomic import write_text
from editor.methods import tradeoff
from editor.methods.statements import labelled_statements, load_labelled
from editor.methods.steer.capture import Activations, GenericStats, capture, generic_stats
from editor.methods.steer.directions import ablation_plan, residual_plan, whitened_direction
from editor.methods.steer.probes import mean_difference, train_probes
from editor.methods.steer.settings import METHODS, SteerSettings
from editor.methods.steer.steer2edit import steer2edit_plan


@dataclass
class SweepPoint:
    method: str
    layer: int
    alpha: float
    gap: float
    perplexity: float
    kl: float
    edits: int
    variant: str = ""
    pareto: bool = False


@dataclass
class SteerReport:
    layers: list[int]
    base_gap: float
    base_perplexity: float
    points: list[SweepPoint] = field(default_factory=list)
    chosen: dict[str, SweepPoint | None] = field(default_factory=dict)
    probe_accuracy: list[float] = field(default_factory=list)
    eval_pairs: int = 0
    statements: int = 0
    damage_budget: float = 0.05  # the largest relative perplexity rise a chosen point may have


def _pareto(points: list[SweepPoint]) -> None:
    for point, front in zip(points, tradeoff.pareto_mask([(p.gap, p.perplexity) for p in points])):
        point.pareto = front


# Ridge strengths for the ablated direction (see directions.whitened), SteerSettings.ablation_ridges: small
# values lean hardest away from what ordinary text carries. Measured on SmolLM2: the plain difference of means
# ablated from every writer and the embeddings costs +30% to +1000% perplexity, its whitened forms +2.7% (read
# at block 21) to +5% (block 15).


@dataclass
class _Candidate:
    method: str
    layer: int
    alpha: float
    variant: str
    build: Callable[[], list]  # the plan, made only when the sweep reaches it


def evaluation_pairs(all_pairs: list[StereotypePair], count: int) -> list[StereotypePair]:
    """The held-out stereotype pairs the sweep scores on: a fixed draw, so an export can be re-scored on the same ones."""
    held = [p for p in stereotypes(all_pairs) if p.held_out]
    random.Random(0).shuffle(held)
    return held[:count]


@dataclass
class _Inputs:
    """What the sweep reads, built once: statements' activations and vectors, damage yardsticks, held-out pairs."""

    acts: Activations
    probes: list
    vectors: np.ndarray  # [layers, hidden]: the settings' own contrast
    residual_vectors: dict[str, np.ndarray]  # the vectors the residual add is swept with, by statement set
    stats: GenericStats
    tokens: torch.Tensor  # WikiText-2 tokens perplexity is measured on
    all_pairs: list[StereotypePair]
    held: list[StereotypePair]
    statements: int


def run_steer(
    model, tokenizer, info: ModelInfo, out: Path, settings: SteerSettings, *, progress: bool = True
) -> SteerReport:
    """Build vectors, probe every layer, sweep the three bakes with hooks, and write the run directory ``out``.

    ``settings.data``: a labelled JSONL/CSV (see ``statements.load_labelled``) instead of the SeeGULL statements;
    the association gap is still measured on SeeGULL pairs held out from vector building.

    ``settings.residual_contrasts``: the statement sets whose vectors the residual add is swept with
    (``contrast``'s own vectors serve probes, ablation and Steer2Edit). A constant shift cannot tell groups
    apart, so the identity vector gives it nothing to remove; the asserted-vs-hedged vector moves every
    statement toward hedging, which lowers the gap. With ``data`` the residual add uses that data's vector alone.
    """
    layers = settings.layers or sorted({int(info.num_layers * 0.5), int(info.num_layers * 0.7)})
    for layer in layers:
        info.check_layer(layer, "layers entry")
    inputs = _inputs(model, tokenizer, info, settings, layers, progress)
    base_lp = last_token_logprobs(model, tokenizer)
    report = SteerReport(
        layers,
        association_gap(model, tokenizer, inputs.all_pairs, inputs.held).mean,
        perplexity(model, inputs.tokens),
        probe_accuracy=[p.test_accuracy for p in inputs.probes],
        eval_pairs=len(inputs.held),
        statements=inputs.statements,
        damage_budget=settings.damage_budget,
    )
    grid = _candidates(inputs, info, settings, layers)
    prefix = PrefixCache(model, info)  # a point at block L recomputes blocks L.. only; the rest is replayed
    for cand in tqdm(grid, desc="steer sweep", disable=not progress):
        edits = cand.build()
        with hooked(model, edits, info), prefix.clean_below(min(e.first_layer() for e in edits)):
            gap = association_gap(model, tokenizer, inputs.all_pairs, inputs.held).mean
            ppl = perplexity(model, inputs.tokens)
            kl = first_token_kl(base_lp, last_token_logprobs(model, tokenizer))
        report.points.append(SweepPoint(cand.method, cand.layer, cand.alpha, gap, ppl, kl, len(edits), cand.variant))
    _pareto(report.points)
    for method, cand in _choose(report, grid, settings.damage_budget).items():
        # The plan is rebuilt rather than kept from the sweep: building is closed-form and deterministic,
        # and a big model's sweep would otherwise hold every candidate's vectors at once.
        write_text(out / f"plan_{method}.json", Plan(edits=cand.build()).to_json() + "\n")
    if report.chosen.get(settings.method) is not None:
        shutil.copyfile(out / f"plan_{settings.method}.json", out / "plan.json")
    _write_outputs(out, info, inputs, report, settings)
    return report


def _inputs(model, tokenizer, info: ModelInfo, settings: SteerSettings, layers: list[int], progress: bool) -> _Inputs:
    all_pairs = load_seegull(settings.seegull)
    build = [p for p in stereotypes(all_pairs) if not p.held_out]
    held = evaluation_pairs(all_pairs, settings.eval_pairs)
    data = Path(settings.data) if settings.data else None
    texts, labels = (
        load_labelled(data)
        if data
        else labelled_statements(build, all_pairs, settings.statements, contrast=settings.contrast)
    )
    acts = capture(model, info, tokenizer, texts, labels, progress=progress)
    vectors = mean_difference(acts)
    residual_vectors = {"data": vectors} if data else {}
    for name in [] if data else settings.residual_contrasts:
        if name == settings.contrast:
            residual_vectors[name] = vectors
        else:
            other_texts, other_labels = labelled_statements(build, all_pairs, settings.statements, contrast=name)
            residual_vectors[name] = mean_difference(
                capture(model, info, tokenizer, other_texts, other_labels, progress=progress)
            )
    # Ordinary text for damage-aware directions and keys: WikiText-2 after the tokens perplexity is measured on.
    text = wikitext_tokens(tokenizer, wikitext_txt(settings.wikitext), settings.wiki_tokens + settings.generic_tokens)
    stats = generic_stats(model, info, text[settings.wiki_tokens :], layers)
    return _Inputs(
        acts,
        train_probes(acts),
        vectors,
        residual_vectors,
        stats,
        text[: settings.wiki_tokens],
        all_pairs,
        held,
        len(texts),
    )


def _candidates(inputs: _Inputs, info: ModelInfo, settings: SteerSettings, layers: list[int]) -> list[_Candidate]:
    """Every sweep point of the three bakes, each a closure that builds its plan when the sweep reaches it."""
    vectors, stats, acts = inputs.vectors, inputs.stats, inputs.acts

    def residual(vec, layer, a):
        return lambda: residual_plan(vec[layer], layer, a)

    def ablation(layer, ridge, strength):
        return lambda: ablation_plan(
            whitened_direction(vectors[layer], stats.residual[layer], ridge), strength=strength
        )

    def steer2edit(layer, a, keys):
        return lambda: steer2edit_plan(acts, info, stats, vectors[layer], layer, a, keys=keys)

    grid = [
        _Candidate("residual_add", layer, a, f"{name} vector", residual(vec, layer, a))
        for name, vec in inputs.residual_vectors.items()
        for layer in layers
        for a in settings.alphas
    ]
    grid += [
        _Candidate("ablate_direction", layer, s, f"whitened, ridge {r:g}", ablation(layer, r, s))
        for layer in layers
        for r in settings.ablation_ridges
        for s in settings.ablation_strengths
    ]
    grid += [
        _Candidate("steer2edit", layer, a, keys, steer2edit(layer, a, keys))
        for keys in settings.keys
        for layer in layers
        for a in settings.edit_alphas
    ]
    return grid


def _choose(report: SteerReport, grid: list[_Candidate], budget: float) -> dict[str, _Candidate]:
    """Per bake, the candidate ``tradeoff.Rule.choose`` picks: inside the budget, the gap lowered by at least 5% and
    closest to zero. Fills ``report.chosen`` (None where nothing qualifies) and returns the chosen candidates."""
    scored = list(zip(grid, report.points))  # the sweep appended one point per candidate, in order
    chosen = {}
    for method in METHODS:
        rule = tradeoff.Rule(
            report.base_gap, lambda cp: cp[1].gap, lambda cp: cp[1].perplexity / report.base_perplexity - 1.0, budget
        )
        best = rule.choose([(cand, p) for cand, p in scored if p.method == method])
        report.chosen[method] = None if best is None else best[1]
        if best is not None:
            chosen[method] = best[0]
    return chosen


def _write_outputs(out: Path, info: ModelInfo, inputs: _Inputs, report: SteerReport, settings: SteerSettings) -> None:
    """Vectors (with import-vectors sidecars), probes, the sweep and the two figures."""
    from safetensors.numpy import save_file

    from editor.io.figures import line_plot

    vectors = inputs.vectors
    saved = {
        "vectors": (vectors, "block"),
        "vectors_after_attention": (mean_difference(inputs.acts, site="attn"), "attn"),
    }
    saved.update(
        {f"vectors_{name}": (vec, "block") for name, vec in inputs.residual_vectors.items() if vec is not vectors}
    )
    for name, (vec, site) in saved.items():
        save_file({f"layer.{i}": vec[i] for i in range(info.num_layers)}, str(out / f"{name}.safetensors"))
        sidecar = {"site": site, "sign": 1, "model_type": info.arch.model_type}
        write_text(out / f"{name}.json", json.dumps(sidecar) + "\n")
    probes = inputs.probes
    write_text(
        out / "probes.json",
        json.dumps([{k: v for k, v in asdict(p).items() if k != "direction"} for p in probes], indent=1) + "\n",
    )
    save_file({f"layer.{p.layer}": p.direction for p in probes}, str(out / "probe_directions.safetensors"))
    write_text(out / "sweep.json", json.dumps({**asdict(report), "settings": settings.model_dump()}, indent=1) + "\n")
    line_plot(
        list(range(info.num_layers)),
        [p.test_accuracy for p in probes],
        out / "probe_accuracy.png",
        xlabel="layer",
        ylabel="test accuracy",
        title="linear probe: stereotyped vs neutral statements",
    )
    _pareto_plot(report, out / "pareto.png")


def _pareto_plot(report: SteerReport, path: Path) -> None:
    """Gap against perplexity per bake, the Pareto front ringed, each bake's choice named, the base starred."""
    budget = report.damage_budget
    marked = [
        tradeoff.Marked(p.perplexity, p.gap, f"chosen: L{p.layer} a={p.alpha:g}", style="note")
        for p in report.chosen.values()
        if p is not None
    ]
    tradeoff.tradeoff_figure(
        path,
        [tradeoff.PlotPoint(p.perplexity, p.gap, p.method, front=p.pareto) for p in report.points],
        xlabel="WikiText-2 perplexity",
        ylabel="SeeGULL association gap (held-out pairs)",
        title="steering sweep (black ring: Pareto front)",
        budget_x=report.base_perplexity * (1 + budget),
        budget_label=f"+{budget:.0%} perplexity (budget)",
        marked=[*marked, tradeoff.Marked(report.base_perplexity, report.base_gap, "base", style="base")],
    )
