"""Build outputs beside their destination and swap them into place when complete; write files atomically.

The guarantee, for a process killed at any instruction (kill -9 included):

- ``staged_directory``: the output is built in a hidden sibling ``.NAME.partial-PID`` and every file and
  folder in it is fsynced. With no old output it is renamed into place. With ``--force`` the new folder
  and the old one trade names in one ``renameat2(RENAME_EXCHANGE)`` call (Linux 3.15+, on ext4, xfs,
  btrfs, tmpfs and most local filesystems), so ``NAME`` always holds a complete output: the old one until
  the exchange, the new one after it. The old folder, now under the hidden name, is deleted next.
- Where no exchange is available (another OS; a filesystem without it, e.g. some network filesystems) the
  old folder is renamed to ``.NAME.old-PID`` and the new one to ``NAME``. A kill between those two renames
  leaves the old output complete under the hidden name only, and the next run that writes ``NAME`` (any
  command, before it does anything else) renames it back; until then ``NAME`` is missing.
- Either way, hidden ``.NAME.partial-PID`` / ``.NAME.old-PID`` leftovers of a dead process are swept by
  the next run writing ``NAME``.
- ``replace_file``: a file is written to a hidden sibling, fsynced, renamed over the target (``rename`` is
  atomic for files everywhere) and its folder fsynced: a reader sees the old file or the new one, whole.

fsync makes the result durable across a power cut too, as far as the disk honours it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import glob
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from editor.errors import EditorError

_PARTIAL = ".partial-"
_OLD = ".old-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def refuse_existing(out: Path, force: bool) -> None:
    if os.path.lexists(out) and not force:
        raise EditorError(f"{out} already exists; choose another --out or pass --force to replace it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _leftovers(out: Path, tag: str) -> list[Path]:
    """Hidden siblings ``.NAME<tag>PID`` of ``out`` whose process is gone."""
    found = []
    for entry in out.parent.glob(glob.escape(f".{out.name}{tag}") + "*"):
        pid = entry.name[len(f".{out.name}{tag}") :]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(entry)
    return sorted(found)


def remove_stale_partials(out: Path) -> None:
    """Clear what a killed process left beside ``out``; put back an old output a fallback swap was moving aside."""
    out = Path(out)
    for old in _leftovers(out, _OLD):
        if not os.path.lexists(out):
            os.rename(old, out)  # killed between the fallback's two renames: the old output is whole
            fsync_dir(out.parent)
        else:
            _remove(old)
    for partial in _leftovers(out, _PARTIAL):
        _remove(partial)


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return  # a platform that cannot open folders (Windows) cannot fsync them either
        raise
    try:
        os.fsync(fd)
    except OSError as err:
        if not directory or err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    _fsync(Path(path))


def fsync_dir(path: Path) -> None:
    _fsync(Path(path), directory=True)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every folder from the deepest up."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                fsync_file(Path(folder, name))
        fsync_dir(Path(folder))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc older than glibc 2.28
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def exchange(a: Path, b: Path) -> bool:
    """Swap the names of ``a`` and ``b`` in one atomic step; False where this system or filesystem cannot."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(tmp: Path, out: Path) -> None:
    """Put the complete folder ``tmp`` at ``out``, replacing what is there (see the module docstring)."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
        fsync_dir(out.parent)
        return
    if exchange(tmp, out):
        fsync_dir(out.parent)
        _remove(tmp)  # the old output, now under the hidden name
        return
    old = out.parent / f".{out.name}{_OLD}{os.getpid()}"
    os.rename(out, old)
    os.rename(tmp, out)
    fsync_dir(out.parent)
    _remove(old)


@contextmanager
def staged_directory(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out``; on success it becomes ``out``, on any error it is removed.

    With ``force`` an existing ``out`` is replaced only after the new build is complete.
    """
    out = Path(out)
    tmp = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)  # first: it may put back an old output that --force must then see
        refuse_existing(out, force)
        _remove(tmp)
        tmp.mkdir()
    except OSError as err:
        raise EditorError(f"cannot write into {out.parent} ({err.strerror}); choose a writable --out") from None
    try:
        yield tmp
        fsync_tree(tmp)
        publish(tmp, out)
    except OSError as err:
        _remove(tmp)
        raise EditorError(
            f"writing {out} failed ({err.strerror or err}); nothing was written, the source is unchanged"
        ) from None
    except BaseException:
        _remove(tmp)
        raise


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a hidden sibling of ``path``, then rename it over ``path``: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_PARTIAL}{os.getpid()}")
    remove_stale_partials(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)`` in UTF-8, atomically and durably (see replace_file)."""
    replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
