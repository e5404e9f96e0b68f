"""Loader of the wedit_general_knowledge lm-eval task: the JSONL files next to this file, as a DatasetDict.

general_knowledge.yaml names it (`custom_dataset: !function utils.load_local`); lm-eval imports this file by its
path relative to the YAML, so the task works from any directory (a `dataset_path: json` task would resolve its
data files against the current directory instead). Dataset.from_list writes no Arrow cache.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _read(name: str) -> list[dict]:
    with (HERE / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_local(**kwargs):  # lm-eval passes the task's metadata and dataset_kwargs; this task needs neither
    import datasets

    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(_read(f"{split}.jsonl")) for split in ("test", "dev")}
    )
