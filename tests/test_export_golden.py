"""Exports are pinned to the byte: a plan of every edit kind, baked into the built-in SmolLM2, must give
exactly the files recorded in tests/golden/export_all_kinds.json (the kinds up to add_token) and
tests/golden/export_head_kinds.json (mean_heads and scale_heads, recorded when they were added, so the first
record never moved).

The hashes were recorded before the package was reorganised into subpackages and must not move with any
refactoring. An intended change of the exported bytes (a new rounding, a new tensor layout) updates the golden
file in the same commit, with the reason in the commit message: run this file with ``--update-golden``.

The bake's float32 dot products (a direction ablation's projections) go through numpy's OpenBLAS, which picks
its kernels by CPU: on an AVX-512 machine its SkylakeX kernels sum in another order than the Haswell/Zen
kernels the record was made with, and some biases differ in their last bit (measured 2026-12-04 on an AMD EPYC
with AVX-512: the bias shard differed; ``OPENBLAS_CORETYPE=Haswell`` or ``Zen`` gave the recorded bytes,
``Sandybridge`` changed both shards). So on x86-64 CPUs with AVX2 the exports run in a child process pinned to
the Haswell kernels: the record then catches changes of the code, not of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from editor.core.plan import parse_plan
from editor.io.checkpoint import Checkpoint
from editor.pipeline.export import export_checkpoint

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).resolve().parent / "golden" / "export_all_kinds.json"
GOLDEN_HEADS = Path(__file__).resolve().parent / "golden" / "export_head_kinds.json"
# Files whose bytes depend on the tool's version or wording, not on the bake.
VARIABLE = {"editor_manifest.json", "README.md"}


def unit(rng: np.random.Generator, n: int, norm: float = 1.0) -> list[float]:
    v = rng.standard_normal(n)
    return (norm * v / np.linalg.norm(v)).astype(np.float32).tolist()


def all_kinds_plan(hidden: int, head_dim: int, intermediate: int, vocab: int) -> list[dict]:
    """Deterministic vectors (numpy's PCG64 stream is the same on every machine)."""
    rng = np.random.default_rng(20261202)
    return [
        {"kind": "zero_heads", "layer": 3, "heads": [0, 5]},
        {"kind": "zero_heads", "layer": 20, "heads": [7]},
        {"kind": "residual_add", "layer": 15, "site": "mlp", "vector": unit(rng, hidden, 4.0)},
        {"kind": "residual_add", "layer": 10, "site": "attn", "vector": unit(rng, hidden, 2.0), "scale": -0.5},
        {"kind": "ablate_direction", "direction": unit(rng, hidden), "strength": 0.8},
        {
            "kind": "rank_one",
            "layer": 12,
            "site": "attn",
            "head": 2,
            "u": unit(rng, hidden),
            "v": unit(rng, head_dim),
            "scale": 0.3,
        },
        {"kind": "rank_one", "layer": 14, "site": "mlp", "neuron": 100, "u": unit(rng, hidden), "scale": 0.2},
        {
            "kind": "rank_one",
            "layer": 5,
            "site": "mlp",
            "u": unit(rng, hidden),
            "v": unit(rng, intermediate),
            "scale": 0.1,
        },
        {"kind": "add_token", "token": "<bias:golden>", "token_id": vocab, "embedding": unit(rng, hidden, 0.5)},
    ]


def head_kinds_plan(hidden: int, head_dim: int) -> list[dict]:
    """mean_heads and scale_heads, alone and on the same head as other edits (the order rules of the bake)."""
    rng = np.random.default_rng(20261215)
    return [
        {"kind": "mean_heads", "layer": 23, "heads": [4, 7], "means": [unit(rng, head_dim), unit(rng, head_dim)]},
        {"kind": "scale_heads", "layer": 27, "heads": [0, 1], "scale": 0.5},
        {"kind": "scale_heads", "layer": 23, "heads": [4], "scale": 0.3},  # scales head 4's mean constant
        {"kind": "rank_one", "layer": 27, "site": "attn", "head": 1, "u": unit(rng, hidden), "v": unit(rng, head_dim)},
        {"kind": "mean_heads", "layer": 27, "heads": [1], "means": [unit(rng, head_dim, 2.0)]},
        {"kind": "residual_add", "layer": 27, "site": "attn", "vector": unit(rng, hidden, 1.5)},
    ]


def export_hashes(source: Path, out: Path, plan_of=None) -> dict[str, str]:
    info = Checkpoint.open(source).info()
    if plan_of is None:
        entries = all_kinds_plan(
            info.hidden_size, info.head_dim, info.intermediate_size, int(info.config["vocab_size"])
        )
    else:
        entries = plan_of(info.hidden_size, info.head_dim)
    export_checkpoint(source, parse_plan(entries), out, progress=False)
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in VARIABLE and not p.name.startswith(".")  # hidden: this machine's own notes
    }


PLANS = {"all_kinds": None, "head_kinds": head_kinds_plan}  # None: export_hashes' own all_kinds_plan


def pinned_export_hashes(source: Path, out: Path, plan: str) -> dict[str, str]:
    """export_hashes(source, out, PLAN) with OpenBLAS on the kernels the records were made with (see the module
    docstring); in this process where those kernels cannot run (no AVX2, not x86-64)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if platform.machine() not in ("x86_64", "AMD64") or " avx2" not in flags:
        return export_hashes(source, out, PLANS[plan])
    here = Path(__file__).resolve().parent
    code = (
        "import json, sys; from pathlib import Path; from test_export_golden import PLANS, export_hashes; "
        "print(json.dumps(export_hashes(Path(sys.argv[1]), Path(sys.argv[2]), PLANS[sys.argv[3]])))"
    )
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", code, str(source), str(out), plan], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_export_of_every_edit_kind_is_byte_identical_to_the_golden_record(tmp_path, smollm2_dir, request):
    hashes = pinned_export_hashes(smollm2_dir, tmp_path / "out", "all_kinds")
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    changed = sorted(name for name in golden.keys() | hashes.keys() if golden.get(name) != hashes.get(name))
    assert not changed, f"exported bytes differ from {GOLDEN.name} in: {', '.join(changed)}"


def test_export_of_the_head_removal_kinds_is_byte_identical_to_their_golden_record(tmp_path, smollm2_dir, request):
    hashes = pinned_export_hashes(smollm2_dir, tmp_path / "out", "head_kinds")
    if request.config.getoption("--update-golden"):
        GOLDEN_HEADS.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN_HEADS.read_text())
    changed = sorted(name for name in golden.keys() | hashes.keys() if golden.get(name) != hashes.get(name))
    assert not changed, f"exported bytes differ from {GOLDEN_HEADS.name} in: {', '.join(changed)}"
