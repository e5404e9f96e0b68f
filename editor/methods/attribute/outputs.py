"""BiasScope's run directory: the plan (every bias's chosen removal), summary.json, per-bias numbers and figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from editor.edits import Edit
from editor.io.atomic import write_text
from editor.methods.attribute.ksweep import k_curve_figure
from editor.methods.attribute.pairs import ContrastivePair, save_pairs
from editor.methods.attribute.removal import KPoint
from editor.methods.attribute.settings import AttributeSettings

if TYPE_CHECKING:
    from editor.methods.attribute.pipeline import BiasAttribution


def union_edits(results: Sequence[BiasAttribution]) -> list[Edit]:
    """Every bias's chosen removal in one plan; a head chosen by several biases keeps the first bias's removal."""
    from editor.edits import EDIT_ADAPTER

    per_head: dict[tuple[int, int], tuple[tuple, list[float] | None]] = {}
    for result in results:
        for edit in (EDIT_ADAPTER.validate_python(e) for e in result.edits):
            means = getattr(edit, "means", None)
            for i, head in enumerate(edit.heads):
                how = (edit.kind, getattr(edit, "scale", None))
                per_head.setdefault((edit.layer, head), (how, means[i] if means else None))
    groups: dict[tuple, dict[int, list[int]]] = {}
    for (layer, head), (how, _) in sorted(per_head.items()):
        groups.setdefault(how, {}).setdefault(layer, []).append(head)
    edits: list[Edit] = []
    for (kind, scale), layers in groups.items():
        for layer, heads in sorted(layers.items()):
            entry: dict = {"kind": kind, "layer": layer, "heads": heads}
            if kind == "scale_heads":
                entry["scale"] = scale
            if kind == "mean_heads":
                entry["means"] = [per_head[(layer, h)][1] for h in heads]
            edits.append(EDIT_ADAPTER.validate_python(entry))
    return edits


SUMMARY_KEYS = (
    "bias",
    "target",
    "eval_target",
    "baseline_gap",
    "damage_budget",
    "saturation_k",
    "chosen_k",
    "removal",
    "heads",
    "gap_after",
    "experts",
    "expert_gap_after",
)


def save_attribution(
    results: Sequence[BiasAttribution], out: Path, *, model: str, variant: str, settings: AttributeSettings
) -> list[tuple[int, int]]:
    """Write the union of the biases' removals as ``plan.json`` and the per-bias numbers as ``summary.json``."""
    from editor.core.plan import Plan

    union = sorted({tuple(h) for r in results for h in r.heads})
    write_text(out / "plan.json", Plan(edits=union_edits(results)).to_json() + "\n")
    biases = []
    for r in results:
        entry = {k: getattr(r, k) for k in SUMMARY_KEYS}
        entry["base"] = _damage(r.base)
        entry["saturation"] = _damage(r.saturation) | {"heads": r.saturation.get("heads", [])}
        entry["chosen"] = _damage(r.chosen) if r.chosen else None
        if r.expert_scores:
            entry["top_experts"] = top_experts(r, 5)
        biases.append(entry)
    summary = {
        "model": model,
        "variant": variant,
        "settings": settings.model_dump(),
        "biases": biases,
        "union_heads": union,
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    expert_edits = _expert_union(results)
    if expert_edits:  # a separate plan: experts and heads are chosen against the same budget, each on its own
        write_text(out / "experts_plan.json", Plan(edits=expert_edits).to_json() + "\n")
    return union


def _expert_union(results: Sequence[BiasAttribution]) -> list[Edit]:
    """Every bias's chosen expert removal in one plan (one scale_experts per layer)."""
    from editor.methods.attribute.experts import removal_edits

    chosen = sorted({(int(layer), int(expert)) for r in results for layer, expert in r.experts})
    return list(removal_edits(chosen))


def top_experts(r: BiasAttribution, count: int) -> list[dict]:
    """The ``count`` experts with the largest mean contrastive effect, strongest first."""
    scores = np.asarray(r.expert_scores)
    # exactly 0: a dense layer's row, or an expert the router never picked on these prompts
    order = [i for i in np.argsort(-scores, axis=None) if scores.flat[i] != 0.0][:count]
    return [
        {"layer": int(i // scores.shape[1]), "expert": int(i % scores.shape[1]), "score": float(scores.flat[i])}
        for i in order
    ]


def describe_experts(r: BiasAttribution) -> str | None:
    """The experts' scores beside the heads', and what removing the robust top experts did (None: a dense model)."""
    if not r.expert_scores:
        return None
    top = ", ".join(f"L{e['layer']}E{e['expert']} {e['score']:+.3f}" for e in top_experts(r, 5))
    line = f"{r.bias}: top experts by contrastive direct effect: {top}"
    if not r.experts and r.baseline_gap <= 0:
        return line + f"; the held-out gap ({r.baseline_gap:.3f}) shows no stereotype to remove, none removed"
    if not r.experts:
        return line + "; no expert removal lowers the gap by 5% within the damage budget, none removed"
    chosen = next(p for p in r.expert_points if [tuple(h) for h in p["heads"]] == [tuple(e) for e in r.experts])
    base = r.base.get("perplexity") or 0.0
    names = ", ".join(f"L{layer}E{expert}" for layer, expert in r.experts)
    return (
        f"{line}; removing {len(r.experts)} ({names}): gap {r.baseline_gap:.3f} -> {r.expert_gap_after:.3f}, "
        f"perplexity {chosen['perplexity']:.2f} ({chosen['perplexity'] / base - 1:+.1%}) -> experts_plan.json"
    )


def _damage(point: dict) -> dict:
    keys = ("removal", "k", "gap", "perplexity", "kl", "concept_hit_rate", "concept_logprob")
    return {k: point.get(k) for k in keys}


def write_bias_artifacts(
    out: Path,
    result: BiasAttribution,
    pairs: list[ContrastivePair],
    eval_pairs: list[ContrastivePair],
    points: list[KPoint],
    base: KPoint,
    chosen: KPoint | None,
) -> None:
    from editor.io.figures import head_heatmap

    out.mkdir(parents=True, exist_ok=True)
    save_pairs(pairs, out / f"{result.bias}.pairs.jsonl")
    save_pairs(eval_pairs, out / f"{result.bias}.eval_pairs.jsonl")
    write_text(out / f"{result.bias}.attribution.json", json.dumps(asdict(result), indent=1) + "\n")
    head_heatmap(
        np.asarray(result.mean_scores),
        out / f"{result.bias}.heatmap.png",
        f"{result.bias}: mean contrastive head effect ({result.target} vs other countries)",
        result.heads,
    )
    k_curve_figure(
        out / f"{result.bias}.k_curve.png",
        points,
        base=base,
        budget=result.damage_budget,
        saturation=result.saturation_k,
        chosen=chosen,
        title=f"{result.bias}: bias and damage with the robust top-k heads removed",
        gap_label=f"stereotype logit gap ({result.eval_target})",
    )


def describe_choice(r: BiasAttribution) -> str:
    """The chosen point beside the saturation point, in one line (the CLI's and the run summary's wording)."""
    base = r.base.get("perplexity") or 0.0

    def damage(point: dict) -> str:
        ppl = point.get("perplexity")
        return "not measured" if ppl is None else f"perplexity {ppl:.2f} ({ppl / base - 1:+.1%})"

    old = f"saturation k={r.saturation_k} ({len(r.saturation.get('heads', []))} heads {r.saturation.get('removal')}"
    old += f": gap {r.saturation.get('gap', r.baseline_gap):.3f}, {damage(r.saturation)})"
    if not r.chosen and r.baseline_gap <= 0:
        return (
            f"{r.bias}: the held-out questions show no stereotype about {r.eval_target} (gap {r.baseline_gap:.3f} "
            f"<= 0), so there is nothing to remove; nothing removed. {old}"
        )
    if not r.chosen:
        return (
            f"{r.bias}: no k lowers the gap ({r.baseline_gap:.3f}) by 5% within the damage budget "
            f"(+{r.damage_budget:.0%} perplexity); nothing removed. {old}"
        )
    heads = ", ".join(f"L{layer}H{head}" for layer, head in r.heads)
    return (
        f"{r.bias}: k={r.chosen_k}, {len(r.heads)} heads {r.removal} ({heads}); stereotype logit gap on "
        f"{r.eval_target}: {r.baseline_gap:.3f} -> {r.gap_after:.3f}, {damage(r.chosen)} against {base:.2f} "
        f"(budget +{r.damage_budget:.0%}); {old}"
    )
