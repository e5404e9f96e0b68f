"""Helpers for the hostile-input tests: run `wedit` in-process, compare trees, refuse pickle, build shards."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from editor.cli import main


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """`wedit ARGS` in this process (no interpreter start-up per call): exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse
            rc = exit_.code if isinstance(exit_.code, int) else 2
    return Result(rc, out.getvalue(), err.getvalue())


def tree(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (hidden ones too), by relative path."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }


def assert_refused(result: Result, out: Path | None, *needles: str, status: int = 2) -> str:
    """A clean refusal: the exit status, one line on stderr naming the problem, no traceback, no output left."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.rc == status, (result.rc, result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    if out is not None:
        assert not os.path.lexists(out), f"{out} was left behind"
        assert not list(Path(out).parent.glob(f".{Path(out).name}*")), "a hidden partial output was left behind"
    return lines[0]


@pytest.fixture(autouse=True)
def no_pickle(monkeypatch):
    """Fail the test if anything in this process unpickles (pickle files are never to be loaded)."""
    calls: list[str] = []

    def refuse(what):
        def call(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} called: a pickle was loaded")

        return call

    monkeypatch.setattr(pickle, "load", refuse("pickle.load"))
    monkeypatch.setattr(pickle, "loads", refuse("pickle.loads"))
    monkeypatch.setattr(pickle, "Unpickler", refuse("pickle.Unpickler"))
    with contextlib.suppress(ImportError):
        import torch

        monkeypatch.setattr(torch, "load", refuse("torch.load"))
    yield
    assert not calls, calls


class _Payload:
    """Unpickling this runs ``os.system('touch MARKER')``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_pickle(path: Path, marker: Path) -> Path:
    """A pytorch_model.bin whose loading would create ``marker``."""
    path.write_bytes(pickle.dumps(_Payload(marker)))
    return path


def fast_tmp() -> Path:
    """A scratch folder on tmpfs where there is one (fsync is free there), else in the system's temp folder."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="wedit-test-", dir=base))


def split_file(data: bytes) -> tuple[int, bytes, bytes]:
    """(header length field, header bytes, data bytes) of a safetensors file."""
    (length,) = struct.unpack("<Q", data[:8])
    return length, data[8 : 8 + length], data[8 + length :]


def join_file(header: dict | bytes, body: bytes, length: int | None = None) -> bytes:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(blob) if length is None else length) + blob + body
