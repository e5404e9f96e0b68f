"""Labelled statements for steering: SeeGULL statements in two contrasts, or a labelled JSONL/CSV file."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

from editor.data.seegull import StereotypePair, not_stereotyped_with
from editor.errors import EditorError
from editor.methods.steer.settings import CONTRASTS

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
    if contrast not in CONTRASTS:
        raise EditorError(f"contrast {contrast!r} is not one of {', '.join(CONTRASTS)}")
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


_LABELS = {"1": 1, "0": 0, "true": 1, "false": 0, "biased": 1, "neutral": 0}


def load_labelled(path: Path) -> tuple[list[str], np.ndarray]:
    """A labelled set: JSONL lines ``{"text": ..., "label": 1|0}`` or a CSV with ``text,label`` columns.

    Labels: 1/true/biased for the behaviour to remove, 0/false/neutral for its absence.
    """
    path = Path(path)
    if not path.is_file():
        raise EditorError(f"{path}: labelled data not found; pass a JSONL or CSV file with text and label")
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(fh), start=2)]
    else:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise EditorError(f"{path}:{n}: not JSON ({err.msg}); write one object per line") from None
    texts, labels = [], []
    for n, row in rows:
        if not isinstance(row, dict) or not str(row.get("text") or "").strip() or "label" not in row:
            raise EditorError(f"{path}:{n}: needs a non-empty 'text' and a 'label'")
        label = _LABELS.get(str(row["label"]).strip().lower())
        if label is None:
            raise EditorError(f"{path}:{n}: label {row['label']!r} is not one of 1/0, true/false, biased/neutral")
        texts.append(str(row["text"]))
        labels.append(label)
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=2) if labels else np.zeros(2, dtype=int)
    if counts.min() < 4:
        raise EditorError(
            f"{path}: needs at least 4 examples of each label (has {counts[1]} biased, {counts[0]} neutral)"
        )
    return texts, np.asarray(labels)
