"""kill -9 of `wedit export --force` at every file-system step: the old or the new export is always whole.

tests/kill_driver.py kills the replacing export just before each of its file-system steps in turn (the
26 kill points for the tiny model, from the first write of the new build to the removal of the old one) and records
what lies at the output path after each kill and after the sweep the next run starts with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from editor.io.atomic import exchange
from tests.tiny import build_model, save_model, tiny_configs

ROOT = Path(__file__).resolve().parent.parent


def _kill_everywhere(tmp_path: Path, fallback: bool) -> list[dict]:
    save_model(build_model(tiny_configs()["llama"]), tmp_path / "base")
    (tmp_path / "old.json").write_text(json.dumps([{"kind": "zero_heads", "layer": 0, "heads": [1]}]))
    (tmp_path / "new.json").write_text(json.dumps([{"kind": "zero_heads", "layer": 1, "heads": [0, 2]}]))
    cmd = [sys.executable, "-m", "tests.kill_driver", str(tmp_path)] + (["--fallback"] if fallback else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    assert len(rows) >= 20, f"only {len(rows)} steps: the hook does not see the export's file operations"
    assert rows[-1]["killed"] is False and rows[-1]["exit"] == 0
    assert rows[-1]["state"] == "new" and rows[-1]["hidden"] == []
    for row in rows:  # after the next run's sweep: a whole old or new export, loadable, and nothing hidden
        assert row["after"] in ("old", "new") and row["loadable"], row
        assert row["hidden_after"] == [], row
    return rows[:-1]


def test_force_replacement_killed_at_every_step(tmp_path):
    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir()
    probe_b.mkdir()
    if not exchange(probe_a, probe_b):
        pytest.skip("this filesystem has no renameat2(RENAME_EXCHANGE); the fallback test covers it")
    killed = _kill_everywhere(tmp_path, fallback=False)
    for row in killed:  # the exchange: the output path holds a whole export at every instant
        assert row["state"] in ("old", "new"), row
    states = [row["state"] for row in killed]
    assert "old" in states and "new" in states  # killed both before and after the swap
    assert states == sorted(states, key=["old", "new"].index)  # old until the swap, new after it
    # killed after the swap, before the old export was deleted: it lies hidden, and the sweep removes it
    assert any(row["state"] == "new" and row["hidden"] for row in killed)


def test_fallback_replacement_killed_at_every_step(tmp_path):
    killed = _kill_everywhere(tmp_path, fallback=True)
    for row in killed:
        assert row["state"] in ("old", "new", "missing"), row
        if row["state"] == "missing":  # between the two renames: the old export is whole under a hidden name
            assert any(".old-" in name for name in row["hidden"]), row
            assert row["after"] == "old", row
    assert any(row["state"] == "missing" for row in killed), "the kill never fell between the two renames"
