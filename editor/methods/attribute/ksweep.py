"""BiasScope's k sweep: every removal of the robust top-k heads, scored with hooks on the bias and on damage.

For each removal (zeroed, mean-ablated, scaled) and each k the robust heads
are removed with run-time hooks and the point records the held-out
stereotype logit gap and the damage: WikiText-2 perplexity on a fixed token
budget, first-token KL against the unedited model on neutral prompts, and
concept retention (does the model still say "late" where a neutral prompt
calls for it). The robust sets grow with k, and so does the damage: once a
removal's perplexity is over the budget at two k in a row, its larger k
cannot be chosen and are not scored, except for the reference removal (the
first one, zero by default), whose gap is scored at every k for the
saturation rule; its saturation point's damage is always measured, so the
old choice and the new one are reported side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.core.hooks import hooked
from editor.core.model_info import ModelInfo
from editor.core.prefix_cache import PrefixCache
from editor.engines.placement import input_device
from editor.evaluation.metrics import (
    NEUTRAL_PROMPTS,
    ConceptProbe,
    concept_retention,
    first_token_kl,
    pad_id,
    perplexity,
    wikitext_tokens,
)
from editor.methods.attribute.removal import KPoint, Removal, saturation_k

PATIENCE = 2  # successive k over the budget after which a removal's larger k are not scored


def wikitext_tail(tokenizer, path: Path, count: int) -> torch.Tensor:
    """The last ``count`` tokens of the text: far from the beginning, where perplexity is measured."""
    text = Path(path).read_text(encoding="utf-8")
    ids = tokenizer(text[-count * 8 :], add_special_tokens=False)["input_ids"][-count:]
    return torch.tensor(ids)


@torch.no_grad()
def neutral_logprobs(model, tokenizer, prompts=NEUTRAL_PROMPTS) -> torch.Tensor:
    """Next-token log-probs after each prompt, in one right-padded batch (``metrics.last_token_logprobs`` runs
    them one at a time; with right padding and causal attention the real tokens' logits are the same)."""
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    pad = pad_id(tokenizer)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    device = input_device(model)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    last = logits[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]
    return torch.log_softmax(last, -1)


@dataclass
class DamageMeter:
    """The unedited model's damage yardsticks, measured once; ``measure`` scores a hooked model against them."""

    tokenizer: object
    tokens: torch.Tensor
    probes: list[ConceptProbe]
    base_logprobs: torch.Tensor
    base: KPoint  # the unedited model as a point: no heads, its own perplexity and concept scores

    @classmethod
    def build(
        cls, model, tokenizer, wikitext: Path, wiki_tokens: int, probes: list[ConceptProbe], gap: float
    ) -> DamageMeter:
        tokens = wikitext_tokens(tokenizer, wikitext, wiki_tokens)
        meter = cls(
            tokenizer, tokens, probes, neutral_logprobs(model, tokenizer), KPoint("none", "none", 0, 0, [], gap)
        )
        meter.measure(model, meter.base)
        return meter

    def measure(self, model, point: KPoint) -> None:
        point.perplexity = perplexity(model, self.tokens)
        point.kl = first_token_kl(self.base_logprobs, neutral_logprobs(model, self.tokenizer))
        if self.probes:
            concept = concept_retention(model, self.tokenizer, self.probes)
            point.concept_hit_rate, point.concept_logprob = concept.hit_rate, concept.mean_logprob


@dataclass
class SweepInputs:
    """What the sweep needs besides the model: the robust set per k, the gap scorer, the yardsticks, the means."""

    info: ModelInfo
    sets: dict[int, list[tuple[int, int]]]  # k -> robust heads, k ascending
    gap: Callable[[], float]  # held-out stereotype logit gap of the model as currently hooked
    meter: DamageMeter
    means: np.ndarray | None  # [layers, heads, head_dim], for the mean removal
    budget: float
    progress: bool = True
    # Replays the layers below a point's first edited layer (the point's heads leave them as they were).
    prefix: PrefixCache | None = None


@contextmanager
def removed(model, inputs: SweepInputs, removal: Removal, heads: list[tuple[int, int]]) -> Iterator[None]:
    """The heads removed with hooks, and the unedited layers below them replayed from the prefix cache."""
    edits = removal_edits(removal, heads, inputs.means)
    with hooked(model, edits, inputs.info):
        if inputs.prefix is None or not edits:
            yield
            return
        with inputs.prefix.clean_below(min(edit.first_layer() for edit in edits)):
            yield


def sweep(model, inputs: SweepInputs, removals: Sequence[Removal], *, progress: bool = True) -> list[KPoint]:
    """Points for every removal at every k it reaches (see the module docstring for which k are scored)."""
    points: list[KPoint] = []
    bar = tqdm(total=len(removals) * len(inputs.sets), desc="k sweep", disable=not progress)
    for index, removal in enumerate(removals):
        points += _sweep_one(model, inputs, removal, reference=index == 0, bar=bar)
    bar.close()
    reference = [p for p in points if p.removal == removals[0].label]
    at = saturation_k([p.k for p in reference], [p.gap for p in reference], inputs.meter.base.gap)
    point = next(p for p in reference if p.k == at)
    if point.perplexity is None:
        with removed(model, inputs, removals[0], point.heads):
            inputs.meter.measure(model, point)
        for other in reference:  # the same heads at another k share the numbers
            if other.heads == point.heads:
                other.perplexity, other.kl = point.perplexity, point.kl
                other.concept_hit_rate, other.concept_logprob = point.concept_hit_rate, point.concept_logprob
    return points


def removal_edits(removal: Removal, heads: list[tuple[int, int]], means: np.ndarray | None) -> list:
    return removal.edits(heads, means if removal.kind == "mean" else None)


def _sweep_one(model, inputs: SweepInputs, removal: Removal, *, reference: bool, bar) -> list[KPoint]:
    base, ceiling = inputs.meter.base, inputs.meter.base.perplexity * (1.0 + inputs.budget)  # type: ignore[operator]
    out: list[KPoint] = []
    seen: dict[frozenset, KPoint] = {}
    over = 0
    for k, heads in inputs.sets.items():
        bar.update(1)
        key = frozenset(heads)
        if key in seen:
            out.append(replace(seen[key], k=k))
            continue
        if not heads:
            point = replace(base, removal=removal.label, kind=removal.kind, strength=removal.strength, k=k)
        elif over >= PATIENCE and not reference:
            break
        else:
            point = KPoint(removal.label, removal.kind, removal.strength, k, list(heads), 0.0)
            with removed(model, inputs, removal, heads):
                point.gap = inputs.gap()
                if over < PATIENCE:
                    inputs.meter.measure(model, point)
            if point.perplexity is not None:
                over = over + 1 if point.perplexity > ceiling else 0
        seen[key] = point
        out.append(point)
    return out


def k_curve_figure(
    path: Path,
    points: Sequence[KPoint],
    *,
    base: KPoint,
    budget: float,
    saturation: int,
    chosen: KPoint | None,
    title: str,
    gap_label: str,
) -> Path:
    """Gap per removal against k (left axis, solid) with its perplexity change (right axis, dashed)."""
    from editor.io.figures import figure

    with figure(path, (7.5, 4.2)) as (_fig, ax):
        right = ax.twinx()
        labels = list(dict.fromkeys(p.removal for p in points))
        for i, label in enumerate(labels):
            color = f"C{i}"
            mine = [p for p in points if p.removal == label]
            ax.plot([p.k for p in mine], [p.gap for p in mine], marker="o", markersize=3, color=color, label=label)
            damaged = [p for p in mine if p.perplexity is not None]
            right.plot(
                [p.k for p in damaged],
                [100 * (p.perplexity / base.perplexity - 1) for p in damaged],  # type: ignore[operator]
                linestyle="--",
                marker="x",
                markersize=3,
                color=color,
            )
        right.axhline(100 * budget, color="red", linestyle=":", linewidth=1, label=f"damage budget +{budget:.0%}")
        ax.axvline(saturation, color="grey", linestyle="--", linewidth=1, label=f"saturation k = {saturation}")
        if chosen is not None:
            ax.axvline(chosen.k, color="black", linewidth=1.2, label=f"chosen: k = {chosen.k}, {chosen.removal}")
        ax.axhline(base.gap, color="grey", linewidth=0.6, label=f"unedited gap {base.gap:.3f}")
        ax.set_xlabel("k (top heads per seed, intersected over seeds)")
        ax.set_ylabel(gap_label)
        right.set_ylabel("perplexity change, % (dashed)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        more, more_names = right.get_legend_handles_labels()
        ax.legend(handles + more, names + more_names, fontsize=7, loc="best")
    return path
