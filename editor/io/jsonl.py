"""Read a JSONL file of pydantic records, with errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from editor.errors import EditorError

Record = TypeVar("Record", bound=BaseModel)


def read_jsonl(
    path: Path, model: type[Record], *, missing: str, empty: str, hint: str = ""
) -> list[tuple[int, Record]]:
    """(line number, record) for every non-blank line; ``missing``/``empty`` finish the one-line errors for a
    file that is not there or holds no records, ``hint`` is appended to a field error."""
    path = Path(path)
    if not path.is_file():
        raise EditorError(f"{path}: {missing}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((number, model.model_validate_json(line)))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"])) or "(line)"
            raise EditorError(f"{path}:{number}: field {where}: {first['msg']}{hint}") from None
    if not records:
        raise EditorError(f"{path}: {empty}")
    return records
