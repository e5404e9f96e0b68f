"""The introspective contrast: the model's own stereotyped completions against its other ones.

PAS builds a steering vector from labelled text; its introspective variant labels the model's own outputs
instead, so the vector points at the stereotypes this model actually produces. Free sampling rarely names
one of SeeGULL's attributes (about 2% of SmolLM2's continuations of these frames do), so the model
completes each frame by choosing among candidates: for a stereotyped pair (X, a) of the build fold, a
frame head about X is completed with whichever of ``a`` and a few fold attributes nobody linked to X the
model finds most likely. A completion is biased (1) when the model chose the stereotype and neutral (0)
when it chose another attribute: both classes are the model's own choices, about the same groups.
"""

from __future__ import annotations

import random

import numpy as np

from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold, linked_attributes
from editor.errors import EditorError
from editor.evaluation.metrics import continuation_logprobs
from editor.methods.statements.frames import statement_heads

MIN_PER_CLASS = 8


def introspective_statements(
    model,
    tokenizer,
    all_pairs: list[StereotypePair],
    fold: SplitFold,
    limit: int,
    seed: int = 0,
    candidates: int = 3,
) -> tuple[list[str], np.ndarray]:
    """The model's completions of frames about ``limit`` pairs of ``fold``, labelled by what it chose."""
    rng = random.Random(seed)
    pairs = rng.sample(list(fold.pairs), min(limit, len(fold.pairs)))
    linked = linked_attributes(all_pairs)
    attributes = sorted({p.attribute for p in fold.pairs})
    heads = statement_heads("frames")
    prefixes, options = [], []
    for pair in pairs:
        others = [a for a in attributes if a not in linked.get(pair.identity, set())]
        if not others:
            continue
        prefixes.append(rng.choice(heads).replace("{X}", pair.identity))
        options.append([pair.attribute, *rng.sample(others, min(candidates, len(others)))])
    flat = [(prefix, " " + option) for prefix, opts in zip(prefixes, options) for option in opts]
    scores = continuation_logprobs(model, tokenizer, [p for p, _ in flat], [c for _, c in flat])
    biased, neutral, at = [], [], 0
    for prefix, opts in zip(prefixes, options):
        choice = int(np.argmax(scores[at : at + len(opts)]))
        at += len(opts)
        (biased if choice == 0 else neutral).append(f"{prefix} {opts[choice]}.")
    if min(len(biased), len(neutral)) < MIN_PER_CLASS:
        raise EditorError(
            f"introspective contrast: the model chose the stereotype in {len(biased)} of {len(prefixes)} frames "
            f"(needs {MIN_PER_CLASS} of each kind); raise 'statements' or leave this contrast out"
        )
    return biased + neutral, np.asarray([1] * len(biased) + [0] * len(neutral))
