"""Every source of labelled statements in one place: templates, frames, the model's own choices, a user's file.

A contrast is a set of biased (1) and neutral (0) texts whose activations differ by the bias: steering vectors
are their class difference, and the fits and identity directions read the statements' heads (cut before the
attribute). ``statements_for`` names every contrast the search and the steering sweep can read:

- ``frames``: a scene about a group ending in its stereotyped attribute, or in an anti-stereotype;
- ``frames_identity``: the same frame and attribute, about the stereotyped group or an unlinked one;
- ``templates``: SeeGULL-style templates, stereotyped group vs unlinked group (what `wedit steer` uses);
- ``negation``: the stereotype asserted vs hedged;
- ``introspective``: the model's own choice of the stereotype against its other choices (reads the model);
- ``data``: a labelled JSONL/CSV file of the user's.

All but ``data`` are written from one fold's pairs, with comparison groups from that fold only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np

from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold
from editor.errors import EditorError
from editor.methods.statements.frames import CONTRAST_FRAMES, frame_statements, statement_heads
from editor.methods.statements.introspective import introspective_statements
from editor.methods.statements.labelled_file import load_labelled
from editor.methods.statements.templates import STATEMENT_TEMPLATES, labelled_statements

Contrast = Literal["frames", "frames_identity", "templates", "negation", "introspective", "data"]
CONTRASTS: tuple[str, ...] = get_args(Contrast)

__all__ = [
    "CONTRASTS",
    "CONTRAST_FRAMES",
    "STATEMENT_TEMPLATES",
    "Contrast",
    "contrast_statements",
    "labelled_statements",
    "load_labelled",
    "statement_heads",
    "statements_for",
]


def contrast_statements(
    contrast: str, all_pairs: list[StereotypePair], fold: SplitFold, limit: int, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """The texts of a contrast written from ``fold``'s pairs alone (every contrast but introspective and data)."""
    if contrast in ("templates", "negation"):
        # labelled_statements draws unlinked groups from the pairs it is given: only the fold's own identities.
        own = [p for p in all_pairs if p.identity in set(fold.identities)]
        kind = "identity" if contrast == "templates" else "negation"
        return labelled_statements(list(fold.pairs), own, limit, seed=seed, contrast=kind)
    if contrast in ("frames", "frames_identity"):
        return frame_statements(contrast, all_pairs, fold, limit, seed)  # type: ignore[arg-type]
    raise EditorError(f"contrast {contrast!r} is not written from a fold; one of {', '.join(CONTRASTS)}")


def statements_for(
    contrast: str,
    all_pairs: list[StereotypePair],
    fold: SplitFold,
    limit: int,
    *,
    seed: int = 0,
    model=None,
    tokenizer=None,
    data: str | Path | None = None,
) -> tuple[list[str], np.ndarray]:
    """The labelled texts of any contrast: the model's own choices (``model``, ``tokenizer``), the user's file
    (``data``), or written from ``fold``."""
    if contrast == "introspective":
        return introspective_statements(model, tokenizer, all_pairs, fold, limit, seed)
    if contrast == "data":
        if data is None:
            raise EditorError("the 'data' contrast reads a labelled JSONL or CSV file; give one as 'data'")
        return load_labelled(Path(data))
    return contrast_statements(contrast, all_pairs, fold, limit, seed)
