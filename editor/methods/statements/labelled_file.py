"""A user's own labelled statements: JSONL lines or a CSV with text and label."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from editor.errors import EditorError

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
