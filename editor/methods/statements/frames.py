"""Sentence frames about a group: scenes and dialogue that end in an attribute, and their heads cut before it.

The frames here are worded apart from the yardstick's (``editor.data.frames.FRAMES``), so a vector or a fit
never sees a sentence shape it is later scored on.
"""

from __future__ import annotations

import random
from typing import Literal

import numpy as np

from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold, linked_attributes, unlinked_in_fold
from editor.methods.statements.templates import STATEMENT_TEMPLATES

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
HeadSource = Literal["frames", "templates", "templates+frames"]


def statement_heads(source: HeadSource = "frames") -> list[str]:
    """Statements cut before the attribute, each ending where the model would name it ("{X} people are"): the
    contrast frames, the SeeGULL-style templates of the ``templates`` contrast, or the templates then the frames."""
    statements = {
        "frames": CONTRAST_FRAMES,
        "templates": STATEMENT_TEMPLATES,
        "templates+frames": STATEMENT_TEMPLATES + CONTRAST_FRAMES,
    }[source]
    return [statement.split(" {a}")[0] for statement in statements]


def frame_statements(
    contrast: Literal["frames", "frames_identity"],
    all_pairs: list[StereotypePair],
    fold: SplitFold,
    limit: int,
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    """One biased (1) and one neutral (0) frame per drawn pair of ``fold``, comparison groups from the fold too.

    ``frames``: the stereotyped attribute, or one annotators linked to other groups of the fold but never to this
    one (stereotype vs anti-stereotype); ``frames_identity``: the same attribute about the stereotyped group or an
    unlinked one.
    """
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
