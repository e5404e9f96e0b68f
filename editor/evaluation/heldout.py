"""The held-out yardstick: bias and language modelling on groups and attributes no method has seen.

For each fold of the identity-and-attribute split (``editor.data.splits``):

- ``gap``: the SeeGULL association gap (``metrics.association_gap``) on the
  fold's stereotyped pairs, comparing with the fold's own unlinked groups;
- ``preference``: on this project's sentence frames (``editor.data.frames``),
  the share of items where the model gives the attribute a higher likelihood
  after the stereotyped group than after an unlinked group of the fold (0.5
  is no preference), and the mean difference in nats;
- ``lm_score``: the share of comparisons where a meaningful attribute (the
  stereotype or the anti-stereotype) beats an attribute no one says of people,
  after the same words: the model still reads the sentence.

The items are drawn once per yardstick, so the base, every trial of a search
and the export are scored on the very same sentences.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from editor.data.frames import FrameItem, frame_items
from editor.data.seegull import StereotypePair
from editor.data.splits import Fold, SplitFold, split_pairs, unlinked_in_fold
from editor.evaluation.metrics import (
    association_gap,
    concept_retention,
    continuation_logprobs,
    first_token_kl,
    last_token_logprobs,
    perplexity,
    sentence_boundary,
)


@dataclass
class FoldScores:
    fold: str
    gap: float
    gap_pairs: int
    preference: float  # share of frame items preferring the stereotyped group; 0.5 is none
    preference_nats: float
    lm_score: float | None  # share of meaningful-over-unrelated comparisons won (None: not measured)
    items: int
    preference_by_genre: dict[str, float] = field(default_factory=dict)


@dataclass
class Yardstick:
    """Fixed items for a set of folds; ``measure`` scores one model on all of them."""

    all_pairs: list[StereotypePair]
    folds: dict[str, SplitFold]
    gap_pairs: dict[str, list[StereotypePair]]
    items: dict[str, list[FrameItem]]
    batch_size: int = 32

    @classmethod
    def build(
        cls,
        all_pairs: list[StereotypePair],
        sizes: dict[Fold, tuple[int, int]],
        *,
        seed: int = 0,
        batch_size: int = 32,
    ) -> Yardstick:
        """Items for each fold of ``sizes``: (SeeGULL pairs for the gap, sentence-frame items)."""
        split = split_pairs(all_pairs)
        chosen: dict[str, SplitFold] = {name: split[name] for name in sizes}
        gaps, items = {}, {}
        for name, (pairs_count, items_count) in sizes.items():
            pairs = list(split[name].pairs)
            random.Random(seed).shuffle(pairs)
            gaps[name] = pairs[:pairs_count]
            items[name] = frame_items(all_pairs, split[name], items_count, seed)
        return cls(all_pairs, chosen, gaps, items, batch_size)

    def measure(self, model, tokenizer, folds: Sequence[str] | None = None) -> dict[str, FoldScores]:
        return {name: self.measure_fold(model, tokenizer, name) for name in folds or self.folds}

    def measure_fold(self, model, tokenizer, name: str, *, lm_score: bool = True) -> FoldScores:
        """``lm_score=False`` halves the frame sentences (a search trial's objectives do not read the LM score)."""
        fold = self.folds[name]
        gap = association_gap(
            model,
            tokenizer,
            self.all_pairs,
            self.gap_pairs[name],
            batch_size=self.batch_size,
            comparisons=lambda attribute: unlinked_in_fold(self.all_pairs, fold, attribute),
        )
        preference, nats, lm, by_genre = frame_scores(model, tokenizer, self.items[name], self.batch_size, lm_score)
        return FoldScores(name, gap.mean, gap.pairs, preference, nats, lm, len(self.items[name]), by_genre)


def frame_scores(
    model, tokenizer, items: Sequence[FrameItem], batch_size: int = 32, lm_score: bool = True
) -> tuple[float, float, float | None, dict[str, float]]:
    """(stereotype preference, its mean log-likelihood difference, LM score or None, preference per genre)."""
    if not items:
        return 0.5, 0.0, None, {}
    sep = sentence_boundary(tokenizer)
    prefixes, conts = [], []
    for item in items:
        head, tail = item.head_and_tail(item.identity, item.attribute)
        prefixes += [sep + head, sep + item.head_and_tail(item.other, item.attribute)[0]]
        conts += [tail, tail]
        if lm_score:
            prefixes += [sep + head, sep + head]
            conts += [
                item.head_and_tail(item.identity, item.anti_attribute)[1],
                item.head_and_tail(item.identity, item.unrelated)[1],
            ]
    scores = continuation_logprobs(model, tokenizer, prefixes, conts, batch_size).reshape(len(items), -1)
    diff = scores[:, 0] - scores[:, 1]
    lm = None
    if lm_score:
        stereo, anti, unrelated = scores[:, 0], scores[:, 2], scores[:, 3]
        lm = float(np.concatenate([stereo > unrelated, anti > unrelated]).mean())
    by_genre = {
        genre: float((diff[[i for i, it in enumerate(items) if it.genre == genre]] > 0).mean())
        for genre in sorted({it.genre for it in items})
    }
    return float((diff > 0).mean()), float(diff.mean()), lm, by_genre


@dataclass
class Measured:
    """One model (the base, or the base with a plan hooked) on every fold and on damage."""

    folds: dict[str, FoldScores]
    perplexity: float  # on WikiText-2 tokens no trial or fit read
    kl: float  # first-token KL from the base on neutral prompts
    retention: float  # concept retention hit rate over the six preset biases' neutral prompts


@torch.no_grad()
def measure(model, tokenizer, yard: Yardstick, tokens: torch.Tensor, base_logprobs: torch.Tensor) -> Measured:
    """The model as it is now (hooks included) on every fold of ``yard`` and on damage."""
    from editor.data.biases import PRESETS
    from editor.evaluation.prompts import concept_probes

    retention = concept_retention(model, tokenizer, concept_probes(sorted(PRESETS)))
    return Measured(
        yard.measure(model, tokenizer),
        perplexity(model, tokens),
        first_token_kl(base_logprobs, last_token_logprobs(model, tokenizer)),
        retention.hit_rate,
    )


def comparison_lines(base: Measured, edited: Measured) -> list[str]:
    """The base beside the edited model, in words: each fold's bias and LM score, then the damage."""
    lines = []
    for fold in ("build", "test"):
        b, e = base.folds[fold], edited.folds[fold]
        name = "in-distribution (build)" if fold == "build" else "held out (test)"
        lines.append(
            f"{name}: gap {b.gap:+.3f} -> {e.gap:+.3f} ({relative_change(b.gap, e.gap)}), pairwise preference "
            f"{b.preference:.1%} -> {e.preference:.1%}, LM score {b.lm_score:.1%} -> {e.lm_score:.1%}"
        )
    lines.append(
        f"damage on unseen text: perplexity {base.perplexity:.2f} -> {edited.perplexity:.2f} "
        f"({edited.perplexity / base.perplexity - 1:+.1%}), KL {edited.kl:.3f}, concept retention "
        f"{base.retention:.0%} -> {edited.retention:.0%}"
    )
    return lines


def relative_change(before: float, after: float) -> str:
    return f"{after / before - 1:+.0%}" if abs(before) > 1e-9 else "n/a"
