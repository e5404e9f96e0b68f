"""Labelled statements for the search's steering vectors, all drawn from the split's build fold.

Four contrasts, each one biased (1) and one neutral (0) text per stereotyped pair:

- ``frames``: a sentence frame about a group ending in its stereotyped attribute, or in an attribute
  annotators linked to other groups of the fold but never to this one (stereotype vs anti-stereotype);
- ``frames_identity``: the same frame and attribute, about the stereotyped group or an unlinked one;
- ``templates``: SeeGULL-style templates, stereotyped group vs unlinked group (what `wedit steer` uses);
- ``negation``: the stereotype asserted vs hedged.

The frames here are worded apart from the yardstick's (``editor.data.frames.FRAMES``), so a vector never
sees a sentence shape it is later scored on.
"""

from __future__ import annotations

import random
from typing import Literal

import numpy as np

from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold, linked_attributes, unlinked_in_fold
from editor.methods.steer.statements import labelled_statements

Contrast = Literal["frames", "frames_identity", "templates", "negation"]
CONTRASTS: tuple[Contrast, ...] = ("frames", "frames_identity", "templates", "negation")

CONTRAST_FRAMES = (
    "Walking through the old town, I overheard that {X} shopkeepers are {a}.",
    "At the wedding, the guests kept saying that {X} relatives are {a}.",
    '"Do you know many {X} people?" "Sure, and they are {a}."',
    '"Your new boss is {X}?" "Yes, and you know they are {a}."',
    "The magazine's cover story argued that {X} families are {a}.",
    "Commentators on the evening show said {X} fans are {a}.",
    "Since I moved abroad, I have noticed that {X} people are {a}.",
    "My grandmother always told me that {X} men are {a}.",
)


def contrast_statements(
    contrast: Contrast, all_pairs: list[StereotypePair], fold: SplitFold, limit: int, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """Biased and neutral texts for ``contrast`` from ``fold``'s pairs; comparison groups come from the fold too."""
    if contrast in ("templates", "negation"):
        # labelled_statements draws unlinked groups from the pairs it is given: only the fold's own identities.
        own = [p for p in all_pairs if p.identity in set(fold.identities)]
        kind = "identity" if contrast == "templates" else "negation"
        return labelled_statements(list(fold.pairs), own, limit, seed=seed, contrast=kind)
    rng = random.Random(seed)
    pairs = rng.sample(list(fold.pairs), min(limit, len(fold.pairs)))
    linked = linked_attributes(all_pairs)
    attributes = sorted({p.attribute for p in fold.pairs})
    texts, labels = [], []
    for pair in pairs:
        frame = rng.choice(CONTRAST_FRAMES)
        if contrast == "frames":
            antis = [a for a in attributes if a not in linked.get(pair.identity, set())]
            if not antis:
                continue
            rows = [(pair.identity, pair.attribute, 1), (pair.identity, rng.choice(antis), 0)]
        else:
            others = unlinked_in_fold(all_pairs, fold, pair.attribute)
            if not others:
                continue
            rows = [(pair.identity, pair.attribute, 1), (rng.choice(others), pair.attribute, 0)]
        for who, what, label in rows:
            texts.append(frame.replace("{X}", who).replace("{a}", what))
            labels.append(label)
    return texts, np.asarray(labels)
