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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from editor.errors import EditorError
from editor.hooks import hooked
from editor.metrics import association_gap, first_token_kl, last_token_logprobs, perplexity, wikitext_tokens
from editor.model_info import ModelInfo
from editor.plan import Plan
from editor.seegull import StereotypePair, stereotypes
from editor.steering import (
    CONTRASTS,
    ablation_plan,
    capture,
    generic_stats,
    labelled_statements,
    load_labelled,
    mean_difference,
    residual_plan,
    steer2edit_plan,
    train_probes,
    whitened_direction,
)

METHODS = ("residual_add", "ablate_direction", "steer2edit")


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
    for p in points:
        p.pareto = not any(
            (q.gap <= p.gap and q.perplexity <= p.perplexity) and (q.gap < p.gap or q.perplexity < p.perplexity) for q in points
        )


# Ridge strengths for the ablated direction (see steering.whitened): small values lean hardest away
# from what ordinary text carries. Measured on SmolLM2: the plain difference of means ablated from every
# writer and the embeddings costs +30% to +1000% perplexity, its whitened forms +2.7% (read at block 21)
# to +5% (block 15).
ABLATION_RIDGES = (0.01, 0.03, 0.1)
ABLATION_STRENGTHS = (0.6, 1.0)
KEY_VARIANTS = ("contrast", "biased_mean")


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


def run_steer(
    model,
    tokenizer,
    info: ModelInfo,
    all_pairs: list[StereotypePair],
    wikitext_path: Path,
    out: Path,
    *,
    layers: list[int] | None = None,
    alphas: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75),
    edit_alphas: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2),
    damage_budget: float = 0.05,
    statements: int = 200,
    eval_pairs: int = 60,
    wiki_tokens: int = 2048,
    generic_tokens: int = 4096,
    data: Path | None = None,
    key_variants: tuple[str, ...] = KEY_VARIANTS,
    ablation_ridges: tuple[float, ...] = ABLATION_RIDGES,
    ablation_strengths: tuple[float, ...] = ABLATION_STRENGTHS,
    contrast: str = "identity",
    residual_contrasts: tuple[str, ...] = CONTRASTS,
    progress: bool = True,
) -> SteerReport:
    """Build vectors, probe every layer, sweep the three bakes with hooks, and write the run directory ``out``.

    ``data``: a labelled JSONL/CSV (see ``steering.load_labelled``) instead of
    the SeeGULL statements; the association gap is still measured on SeeGULL
    pairs held out from vector building.

    ``residual_contrasts``: the SeeGULL statement sets whose vectors the
    residual add is swept with (``contrast``'s own vectors serve probes,
    ablation and Steer2Edit). A constant shift cannot tell groups apart, so
    the identity vector gives it nothing to remove; the asserted-vs-hedged
    vector moves every statement toward hedging, which lowers the gap. With
    ``data`` the residual add uses that data's vector alone.
    """
    from safetensors.numpy import save_file

    from editor.plots import line_plot

    unknown = [k for k in key_variants if k not in KEY_VARIANTS]
    if unknown:
        raise EditorError(f"Steer2Edit keys {', '.join(unknown)} unknown; use {', '.join(KEY_VARIANTS)}")
    unknown = [c for c in (contrast, *residual_contrasts) if c not in CONTRASTS]
    if unknown:
        raise EditorError(f"contrast {', '.join(unknown)} unknown; use {', '.join(CONTRASTS)}")
    build = [p for p in stereotypes(all_pairs) if not p.held_out]
    held = evaluation_pairs(all_pairs, eval_pairs)

    texts, labels = load_labelled(data) if data else labelled_statements(build, all_pairs, statements, contrast=contrast)
    acts = capture(model, info, tokenizer, texts, labels, progress=progress)
    probes = train_probes(acts)
    vectors = mean_difference(acts)
    # Vectors the residual add is swept with, by the statement set they come from.
    residual_vectors = {"data": vectors} if data else {}
    for name in [] if data else residual_contrasts:
        if name == contrast:
            residual_vectors[name] = vectors
        else:
            other_texts, other_labels = labelled_statements(build, all_pairs, statements, contrast=name)
            residual_vectors[name] = mean_difference(capture(model, info, tokenizer, other_texts, other_labels, progress=progress))
    layers = layers or sorted({int(info.num_layers * 0.5), int(info.num_layers * 0.7)})
    for layer in layers:
        info.check_layer(layer, "--layers entry")

    # Ordinary text for damage-aware directions and keys: WikiText-2 after the tokens perplexity is measured on.
    text = wikitext_tokens(tokenizer, wikitext_path, wiki_tokens + generic_tokens)
    tokens = text[:wiki_tokens]
    stats = generic_stats(model, info, text[wiki_tokens:], layers)
    base_lp = last_token_logprobs(model, tokenizer)
    base_gap = association_gap(model, tokenizer, all_pairs, held).mean
    base_ppl = perplexity(model, tokens)
    report = SteerReport(
        layers,
        base_gap,
        base_ppl,
        probe_accuracy=[p.test_accuracy for p in probes],
        eval_pairs=len(held),
        statements=len(texts),
        damage_budget=damage_budget,
    )

    def residual(vec, layer, a):
        return lambda: residual_plan(vec[layer], layer, a)

    def ablation(layer, ridge, strength):
        return lambda: ablation_plan(whitened_direction(vectors[layer], stats.residual[layer], ridge), strength=strength)

    def steer2edit(layer, a, keys):
        return lambda: steer2edit_plan(acts, info, stats, vectors[layer], layer, a, keys=keys)

    grid = [
        _Candidate("residual_add", layer, a, f"{name} vector", residual(vec, layer, a))
        for name, vec in residual_vectors.items()
        for layer in layers
        for a in alphas
    ]
    grid += [
        _Candidate("ablate_direction", layer, s, f"whitened, ridge {r:g}", ablation(layer, r, s))
        for layer in layers
        for r in ablation_ridges
        for s in ablation_strengths
    ]
    grid += [
        _Candidate("steer2edit", layer, a, keys, steer2edit(layer, a, keys))
        for keys in key_variants
        for layer in layers
        for a in edit_alphas
    ]
    for cand in tqdm(grid, desc="steer sweep", disable=not progress):
        edits = cand.build()
        with hooked(model, edits, info):
            gap = association_gap(model, tokenizer, all_pairs, held).mean
            ppl = perplexity(model, tokens)
            kl = first_token_kl(base_lp, last_token_logprobs(model, tokenizer))
        report.points.append(SweepPoint(cand.method, cand.layer, cand.alpha, gap, ppl, kl, len(edits), cand.variant))
    _pareto(report.points)
    # A point must lower the gap by at least 5% of its size to count: noise-level gains are not a debiasing.
    # Among those, the one closest to no association wins: a strongly negative gap is the stereotype
    # reversed, not removed.
    needed = base_gap - 0.05 * abs(base_gap)
    scored = list(zip(grid, report.points))  # the sweep appended one point per candidate, in order
    for method in METHODS:
        ok = [
            (cand, p)
            for cand, p in scored
            if p.method == method and p.perplexity <= base_ppl * (1 + damage_budget) and p.gap <= needed
        ]
        if not ok:
            report.chosen[method] = None
            continue
        cand, point = min(ok, key=lambda cp: (abs(cp[1].gap), cp[1].perplexity))
        report.chosen[method] = point
        # The plan is rebuilt rather than kept from the sweep: building is closed-form and deterministic,
        # and a big model's sweep would otherwise hold every candidate's vectors at once.
        (out / f"plan_{method}.json").write_text(Plan(edits=cand.build()).to_json() + "\n")

    saved = {"vectors": (vectors, "block"), "vectors_after_attention": (mean_difference(acts, site="attn"), "attn")}
    saved.update({f"vectors_{name}": (vec, "block") for name, vec in residual_vectors.items() if vec is not vectors})
    for name, (vec, site) in saved.items():
        save_file({f"layer.{i}": vec[i] for i in range(info.num_layers)}, str(out / f"{name}.safetensors"))
        sidecar = {"site": site, "sign": 1, "model_type": info.arch.model_type}
        (out / f"{name}.json").write_text(json.dumps(sidecar) + "\n")
    (out / "probes.json").write_text(
        json.dumps([{k: v for k, v in asdict(p).items() if k != "direction"} for p in probes], indent=1) + "\n"
    )
    save_file({f"layer.{p.layer}": p.direction for p in probes}, str(out / "probe_directions.safetensors"))
    (out / "sweep.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    line_plot(
        list(range(info.num_layers)),
        [p.test_accuracy for p in probes],
        out / "probe_accuracy.png",
        xlabel="layer",
        ylabel="test accuracy",
        title="linear probe: stereotyped vs neutral statements",
    )
    _pareto_plot(report, out / "pareto.png")
    return report


def _pareto_plot(report: SteerReport, path: Path) -> None:
    from editor.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in zip(METHODS, "os^"):
        pts = [p for p in report.points if p.method == method]
        # Points on the Pareto front get a black ring; the point each bake chose is named beside it.
        ax.scatter([p.perplexity for p in pts], [p.gap for p in pts], marker=marker, label=method)
        front = [p for p in pts if p.pareto]
        ax.scatter(
            [p.perplexity for p in front], [p.gap for p in front], marker=marker, s=90, facecolors="none", edgecolors="black"
        )
        chosen = report.chosen.get(method)
        if chosen is not None:
            ax.annotate(
                f"chosen: L{chosen.layer} a={chosen.alpha:g}", (chosen.perplexity, chosen.gap), fontsize=7,
                xytext=(4, 4), textcoords="offset points",
            )
    ax.scatter([report.base_perplexity], [report.base_gap], marker="*", s=150, color="black", label="base")
    budget = report.damage_budget
    ax.axvline(report.base_perplexity * (1 + budget), color="grey", linestyle="--", label=f"+{budget:.0%} perplexity (budget)")
    ax.set_xlabel("WikiText-2 perplexity")
    ax.set_ylabel("SeeGULL association gap (held-out pairs)")
    ax.set_title("steering sweep (black ring: Pareto front)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
