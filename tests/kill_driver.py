"""Kill `wedit export --force` at each of its file-system steps in turn and report what every kill left behind.

Run by tests/test_atomic_kill.py as ``python -m tests.kill_driver WORK_DIR [--fallback]`` (its own process:
an audit hook cannot be removed once added, and forking is only safe without the test runner's threads).
For k = 1, 2, ... a forked child replaces an old export with a new one and SIGKILLs itself just before its
k-th file-system step (a write-mode open, rename, remove, mkdir, copy, or the ctypes renameat2 call, as
Python's audit events report them); the loop ends at the first k the export survives. After each kill the
parent records what lies at the output path (the old export, the new one, nothing, or something else) and
the hidden siblings, then runs the sweep the next run starts with and records the same again.
``--fallback`` makes the child swap without renameat2, as on a system that lacks it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

STEPS = {
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "shutil.copyfile",
    "shutil.rmtree",
    "ctypes.call_function",
}
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def tree(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def loadable(path: Path) -> bool:
    from safetensors import safe_open

    for file in path.glob("*.safetensors"):
        with safe_open(file, framework="np") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                fh.get_tensor(key)
    return (path / "editor_manifest.json").is_file()


def _child(k: int, argv: list[str], fallback: bool) -> None:
    """Run the export in this (forked) process, killed just before its k-th file-system step."""
    import editor.io.atomic as atomic
    from editor.cli import main as wedit

    if fallback:
        atomic.exchange = lambda a, b: False
    steps = 0

    def hook(event: str, args: tuple) -> None:
        nonlocal steps
        writing = event == "open" and isinstance(args[2], int) and args[2] & WRITE
        if event in STEPS or writing:
            steps += 1
            if steps == k:
                os.kill(os.getpid(), signal.SIGKILL)

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.addaudithook(hook)
    os._exit(100 + wedit(argv))


def run(work: Path, fallback: bool) -> list[dict]:
    import editor.io.atomic as atomic
    from editor.cli import main as wedit

    out, snapshot = work / "out", work / "old-snapshot"
    base = [str(work / "base")]
    new_argv = ["export", "--model", *base, "--plan", str(work / "new.json"), "--out", str(out), "--force"]
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON report
        assert wedit(["export", "--model", *base, "--plan", str(work / "old.json"), "--out", str(out)]) == 0
        shutil.copytree(out, snapshot, symlinks=True)
        assert wedit(new_argv) == 0
    states = {"old": tree(snapshot), "new": tree(out)}
    assert states["old"] != states["new"] and loadable(snapshot) and loadable(out)

    def state() -> str:
        found = tree(out)
        return next((name for name, files in states.items() if files == found), "missing" if found is None else "other")

    def hidden() -> list[str]:
        return sorted(p.name for p in work.glob(".out*"))

    results = []
    for k in range(1, 10_000):
        shutil.rmtree(out)
        shutil.copytree(snapshot, out, symlinks=True)
        pid = os.fork()
        if pid == 0:
            _child(k, new_argv, fallback)
        _, status = os.waitpid(pid, 0)
        row = {"k": k, "killed": os.WIFSIGNALED(status), "state": state(), "hidden": hidden()}
        atomic.remove_stale_partials(out)  # what the next run writing `out` does first
        row |= {"after": state(), "hidden_after": hidden()}
        if row["after"] in states:
            row["loadable"] = loadable(out)
        results.append(row)
        if not row["killed"]:
            row["exit"] = os.WEXITSTATUS(status) - 100
            break
    return results


if __name__ == "__main__":
    sys.dont_write_bytecode = True  # no .pyc written mid-run: every counted step is the export's own
    print(json.dumps(run(Path(sys.argv[1]), "--fallback" in sys.argv[2:])))
