from __future__ import annotations

import os

import pytest

# Tests never reach the Hub; a source that needs it must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir():
    """The built-in SmolLM2 as a plain checkpoint (converted once, then cached)."""
    from editor.sources import DEFAULT_BUILTIN, resolve_source

    return resolve_source(DEFAULT_BUILTIN, progress=False)
