"""Build outputs beside their destination and rename them into place when complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from editor.errors import EditorError

_PARTIAL = ".partial-"


def refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise EditorError(f"{out} already exists; choose another --out or pass --force to replace it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> None:
    """Remove builds of ``out`` left by a process that was killed (kill -9 leaves no chance to clean up)."""
    for entry in out.parent.glob(f".{out.name}{_PARTIAL}*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def staged_directory(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out``; on success it becomes ``out``, on any error it is removed.

    With ``force`` an existing ``out`` is replaced only after the new build is complete.
    """
    out = Path(out)
    refuse_existing(out, force)
    tmp = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as err:
        raise EditorError(f"cannot write into {out.parent} ({err.strerror}); choose a writable --out") from None
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EditorError(
            f"writing {out} failed ({err.strerror or err}); nothing was written, the source is unchanged"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a hidden sibling of ``path``, then rename it over ``path``: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}{_PARTIAL}{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically (see replace_file)."""
    replace_file(path, lambda tmp: tmp.write_text(text))
