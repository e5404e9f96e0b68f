"""`wedit run`: replay a recipe (source, inject, attribute/steer, plan, export, verify, eval, card), cached and resumable."""

from __future__ import annotations

import argparse
import sys

from editor.cli.common import GATE_FAILED


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "recipe", help="a built-in recipe's name (see `wedit recipes`), e.g. smollm2-always_late, or a recipe YAML file"
    )
    p.add_argument("--out", help="run directory (default runs/NAME, NAME from the recipe)")
    p.add_argument("--force", action="store_true", help="redo every stage, ignoring the cache")
    p.add_argument(
        "--from",
        dest="from_stage",
        metavar="STAGE",
        help="redo this stage and every later one (source, inject, attribute, steer, plan, export, verify, eval, card)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a recipe field, e.g. --set attribute.seeds=2 (repeatable; the value is read as YAML)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.recipes.runner import run_recipe

    try:
        report = run_recipe(args.recipe, args.out, force=args.force, from_stage=args.from_stage, overrides=args.set)
    except KeyboardInterrupt:
        print("wedit: interrupted; finished stages are kept, run the same command again to resume", file=sys.stderr)
        return 130
    if report.gate_failures:
        print(
            f"wedit: the export {report.export} fails its damage gate ({'; '.join(report.gate_failures)}); "
            "its card says so and `wedit push` refuses it without --allow-gate-failure",
            file=sys.stderr,
        )
        return GATE_FAILED
    if report.export is not None:
        print(f"verified export: {report.export}  (serve it with: vllm serve {report.export})")
    return 0
