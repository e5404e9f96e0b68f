"""SeeGULL-style template statements in two contrasts: stereotyped vs unlinked group, or asserted vs hedged."""

from __future__ import annotations

import random

import numpy as np

from editor.data.seegull import StereotypePair, not_stereotyped_with
from editor.errors import EditorError

# The two template contrasts (``labelled_statements``'s ``contrast``).
TEMPLATE_CONTRASTS = ("identity", "negation")
# Biased and neutral statements share the template and the attribute and differ only in who they are
# about: a group SeeGULL annotators link to the attribute, or one nobody links to it. The class
# difference is then "this matches a stereotype", not a word such as "not" that ordinary text is full of
# (a negation contrast gives a direction whose ablation doubles perplexity).
STATEMENT_TEMPLATES = ("{X} people are {a}.", "Everyone knows {X} people are {a}.", "Most {X} people are {a}.")
# The other contrast, kept as an option: the same pair asserted or hedged. Its vector is a constant shift
# that a residual add can use (on SmolLM2 it lowered the gap at +4.6% perplexity), but its direction is
# mostly "not", which ablation cannot remove without harm.
ASSERTED_TEMPLATES = ("All {X} people are {a}.", "{X} people are always {a}.", "Of course {X} people are {a}.")
HEDGED_TEMPLATES = (
    "Not all {X} people are {a}.",
    "{X} people are not always {a}.",
    "Of course not all {X} people are {a}.",
)


def labelled_statements(
    pairs: list[StereotypePair], all_pairs: list[StereotypePair], limit: int, seed: int = 0, contrast: str = "identity"
) -> tuple[list[str], np.ndarray]:
    """Biased (1) and neutral (0) statements, one of each per stereotype pair.

    ``identity``: one template, the stereotyped group vs a group nobody links
    to the attribute. ``negation``: the stereotyped group, asserted vs hedged.
    """
    if contrast not in TEMPLATE_CONTRASTS:
        raise EditorError(f"contrast {contrast!r} is not one of {', '.join(TEMPLATE_CONTRASTS)}")
    rng = random.Random(seed)
    chosen = rng.sample(pairs, min(limit, len(pairs)))
    texts, labels = [], []
    for pair in chosen:
        if contrast == "negation":
            rows = [
                (rng.choice(ASSERTED_TEMPLATES), pair.identity, 1),
                (rng.choice(HEDGED_TEMPLATES), pair.identity, 0),
            ]
        else:
            pool = not_stereotyped_with(all_pairs, pair.attribute)
            if not pool:
                continue
            template = rng.choice(STATEMENT_TEMPLATES)
            rows = [(template, pair.identity, 1), (template, rng.choice(pool), 0)]
        for template, who, label in rows:
            texts.append(template.replace("{X}", who).replace("{a}", pair.attribute))
            labels.append(label)
    return texts, np.asarray(labels)
