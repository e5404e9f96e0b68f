"""`wedit run RECIPE`: the whole chain, each stage cached in the run directory.

A stage writes into ``RUN/<stage>/`` through ``staged_directory`` (built
beside it, renamed into place when complete) and then a done-marker
``RUN/<stage>.done.json`` holding a key: the sha256 of the stage's settings
and of the keys of the stages it reads. A later run skips a stage whose
marker holds the key it would compute now (and whose output is still there);
a changed setting changes that stage's key and so the key of every stage
after it. An interrupted stage leaves its old output and old marker (or
none) in place, so the next run redoes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.evaluation.gates import failures
from editor.io.atomic import staged_directory, write_text
from editor.recipes.context import RunContext
from editor.recipes.schema import load_recipe
from editor.recipes.stages import STAGES


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # earlier stages whose keys enter this one's
    settings: Callable[[RunContext], dict[str, Any] | None]  # None: not in this recipe
    run: Callable[[RunContext, Path], dict[str, Any]]
    numbers: Callable[[dict[str, Any]], str]
    valid: Callable[[dict[str, Any]], bool]


def build_stages() -> list[Stage]:
    always = lambda result: True  # noqa: E731 (a stage whose output cannot vanish behind our back)
    return [Stage(m.NAME, m.READS, m.settings, m.run, m.numbers, getattr(m, "valid", always)) for m in STAGES]


STAGE_NAMES = tuple(stage.name for stage in build_stages())


@dataclass
class StageRecord:
    name: str
    status: str  # ran | cached | skipped (not in the recipe) | failed
    seconds: float = 0.0
    numbers: str = ""


@dataclass
class RunReport:
    run_dir: Path
    records: list[StageRecord] = field(default_factory=list)
    export: Path | None = None
    gate_failures: list[str] = field(default_factory=list)  # the eval stage's failed damage gates (eval.max_drop)


def stage_key(name: str, settings: dict[str, Any], upstream: dict[str, str]) -> str:
    blob = json.dumps({"stage": name, "settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def marker_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.done.json"


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or torn: the stage counts as not done


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def run_recipe(
    recipe_path: str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    from_stage: str | None = None,
    overrides: list[str] = (),
    progress: bool = True,
    console=None,
) -> RunReport:
    from rich.console import Console

    # Not a terminal (CI logs, pipes): rich would wrap the summary at 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    if from_stage is not None and from_stage not in STAGE_NAMES:
        raise EditorError(f"--from {from_stage!r}: not a stage; stages: {', '.join(STAGE_NAMES)}")
    ctx = _context(recipe_path, out, list(overrides), progress)
    # Settings first, for every stage: a recipe that asks for a missing stage or file fails before any work.
    settings = {stage.name: stage.settings(ctx) for stage in build_stages()}
    report = RunReport(ctx.run_dir)
    # A stage's key covers its settings and the *token* of each stage it reads: a fresh token every time a stage
    # runs, so a stage redone with unchanged settings (--from, an interruption) still redoes everything after it.
    tokens: dict[str, str] = {}
    redo = force
    for stage in build_stages():
        redo = redo or stage.name == from_stage
        if settings[stage.name] is None:
            report.records.append(StageRecord(stage.name, "skipped", numbers="not in this recipe"))
            continue
        key = stage_key(stage.name, settings[stage.name], {u: tokens[u] for u in stage.reads if u in tokens})
        marker = _read_marker(marker_path(ctx.run_dir, stage.name))
        if (
            not redo
            and marker
            and marker.get("key") == key
            and "token" in marker
            and (ctx.run_dir / stage.name).is_dir()
            and stage.valid(marker["result"])
        ):
            ctx.results[stage.name] = marker["result"]
            tokens[stage.name] = marker["token"]
            report.records.append(StageRecord(stage.name, "cached", numbers=stage.numbers(marker["result"])))
            console.print(f"[dim]= {stage.name}: cached[/dim]")
            continue
        tokens[stage.name] = _run_stage(stage, ctx, key, report, console)
    if "export" in ctx.results:
        report.export = Path(ctx.results["export"]["path"])
    report.gate_failures = failures(ctx.results.get("eval", {}).get("gates", []))
    print_summary(report, console)
    return report


def _context(recipe_path: str | Path, out: str | Path | None, overrides: list[str], progress: bool) -> RunContext:
    """Load the recipe, make the run directory (absolute: markers record paths) and record the recipe in it."""
    from editor.recipes.schema import find_recipe

    recipe_arg = str(recipe_path)
    recipe_path = find_recipe(recipe_path)
    recipe, data = load_recipe(recipe_path, overrides)
    run_dir = (Path(out) if out else Path("runs") / recipe.name).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EditorError(f"cannot create the run directory {run_dir} ({err.strerror}); choose another --out") from None
    record = {"file": str(recipe_path), "recipe": data}
    if _read_marker(run_dir / "recipe.json") != record:  # rewritten only when it changes: a cached run writes nothing
        _write_json(run_dir / "recipe.json", record)
    if recipe.threads:
        import torch

        torch.set_num_threads(recipe.threads)
    return RunContext(
        recipe=recipe,
        data=data,
        recipe_path=recipe_path,
        run_dir=run_dir,
        progress=progress,
        overrides=overrides,
        recipe_arg=recipe_arg if recipe_path != Path(recipe_arg).expanduser() else str(recipe_path),
    )


def _run_stage(stage: Stage, ctx: RunContext, key: str, report: RunReport, console) -> str:
    """Run one stage into a fresh directory, then write its marker; return the stage's new token."""
    console.rule(f"[bold]{stage.name}")
    marker_file = marker_path(ctx.run_dir, stage.name)
    # No marker while the stage runs: whatever stops it (kill -9 included), the next run redoes it.
    marker_file.unlink(missing_ok=True)
    start = time.monotonic()
    try:
        with staged_directory(ctx.run_dir / stage.name, force=True) as tmp:
            result = stage.run(ctx, tmp)
    except BaseException:
        report.records.append(StageRecord(stage.name, "failed", time.monotonic() - start))
        print_summary(report, console)
        raise
    seconds = time.monotonic() - start
    token = hashlib.sha256(f"{key}:{time.time_ns()}:{os.getpid()}".encode()).hexdigest()
    _write_json(marker_file, {"stage": stage.name, "key": key, "token": token, "seconds": seconds, "result": result})
    ctx.results[stage.name] = result
    report.records.append(StageRecord(stage.name, "ran", seconds, stage.numbers(result)))
    return token


def print_summary(report: RunReport, console) -> None:
    from rich.table import Table

    table = Table(title=f"wedit run: {report.run_dir}")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("result", overflow="fold")
    colours = {"ran": "green", "cached": "cyan", "skipped": "dim", "failed": "red"}
    for rec in report.records:
        seconds = f"{rec.seconds:.1f}" if rec.status in ("ran", "failed") else "-"
        table.add_row(rec.name, f"[{colours[rec.status]}]{rec.status}[/]", seconds, rec.numbers)
    console.print(table)
