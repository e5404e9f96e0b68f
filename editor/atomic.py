"""Build outputs beside their destination and rename them into place when complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from editor.errors import EditorError


def refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise EditorError(f"{out} already exists; choose another --out or pass --force to replace it")


@contextmanager
def staged_directory(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out``; on success it becomes ``out``, on any error it is removed.

    With ``force`` an existing ``out`` is replaced only after the new build is complete.
    """
    out = Path(out)
    refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
