"""Read a JSON file that a user or a download may have damaged: any failure is one line naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editor.errors import EditorError


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """The file's JSON object; a file that is not UTF-8 JSON, nests too deep, or holds another JSON type is an
    EditorError that names ``path`` and ends with ``fix`` (e.g. "re-download it")."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EditorError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}; {fix}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as err:
        # ValueError: Python refuses integers of more than 4300 digits; RecursionError: nesting past the C stack.
        raise EditorError(f"{path}: not valid JSON ({type(err).__name__}); {fix}") from None
    if not isinstance(data, dict):
        raise EditorError(f"{path}: holds a JSON {type(data).__name__}, not an object; {fix}")
    return data
