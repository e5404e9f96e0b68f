"""`wedit eval`: bias and damage metrics of a model (and its base), recorded in an export's manifest and card."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from editor.cli.common import GATE_FAILED, add_output, add_threads, set_threads
from editor.core.settings import add_flags, from_flags
from editor.evaluation.settings import EvalSettings


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", metavar="MODEL_OR_EXPORT", help="any model source; an export also gets the results in its card"
    )
    p.add_argument("--base", help="base model to compare with (an export's default: the base its manifest names)")
    add_output(p, "directory to write, e.g. RUN/eval")
    add_flags(p, EvalSettings, group="evaluation settings (the recipe's eval section)")
    add_threads(p)
    p.add_argument(
        "--no-record", action="store_true", help="do not write the results into the export's manifest and card"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.evaluation.run import record_eval, run_eval
    from editor.io.atomic import refuse_existing
    from editor.io.manifest import MANIFEST, locate_base, read_manifest
    from editor.io.sources import resolve_source

    settings = from_flags(EvalSettings, args)
    settings.check_machine()
    out = Path(args.out)
    refuse_existing(out, args.force)
    model_dir = resolve_source(args.model)
    is_export = (model_dir / MANIFEST).is_file()
    if is_export:  # an export knows its base; --base only says where it lies
        base_dir = locate_base(model_dir, read_manifest(model_dir), args.base)
    else:
        base_dir = resolve_source(args.base) if args.base else None
    set_threads(args)
    report = run_eval(model_dir, base_dir, out, settings, force=args.force)
    print((out / "eval.md").read_text())
    if is_export and not args.no_record:
        record_eval(model_dir, report, out / "eval.png")
        print(f"recorded in {model_dir}/editor_manifest.json and README.md (evaluation section, model-index)")
    print(f"wrote {out}: eval.json, eval.md, eval.png, generations.jsonl")
    if report.gate_failures:
        print(f"wedit: fails its damage gate: {'; '.join(report.gate_failures)}", file=sys.stderr)
        return GATE_FAILED
    return 0
