"""editor: find where a bias lives in an open-weight LLM and bake the fix into the weights."""

from __future__ import annotations

__version__ = "0.1.0"

from editor.errors import EditorError, RefusedEdit

__all__ = ["EditorError", "RefusedEdit", "__version__"]
