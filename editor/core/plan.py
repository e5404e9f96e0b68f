"""Plans: an ordered list of edits, stored as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from editor.edits import EDIT_ADAPTER, EDIT_KINDS, AnyEdit
from editor.errors import EditorError


class Plan(BaseModel):
    edits: list[AnyEdit]

    def to_json(self) -> str:
        return json.dumps({"edits": [e.model_dump() for e in self.edits]}, indent=2)


def parse_plan(data: object, where: str = "plan") -> Plan:
    """Validate a plan given as a list of edits or as {"edits": [...]}; errors name the entry and field."""
    entries = data.get("edits") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise EditorError(f'{where}: a plan is a JSON list of edits (or {{"edits": [...]}}); got {type(data).__name__}')
    edits = []
    for i, entry in enumerate(entries):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in EDIT_KINDS:
            raise EditorError(f"{where}: entry {i}: 'kind' must be one of {', '.join(EDIT_KINDS)}; got {kind!r}")
        try:
            edits.append(EDIT_ADAPTER.validate_python(entry))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"][1:]) or "(entry)"
            raise EditorError(f"{where}: entry {i} ({kind}): field {field}: {first['msg']}") from None
    return Plan(edits=edits)


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EditorError(
            f"{path}: plan file not found; write one with `wedit` stages or by hand (see the docs' Concepts page)"
        ) from None
    except json.JSONDecodeError as err:
        raise EditorError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    return parse_plan(data, str(path))
