"""`wedit diff`: explain how two checkpoints differ, and which recorded edit did it."""

from __future__ import annotations

import argparse


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first checkpoint (any source)")
    p.add_argument("b", help="second checkpoint (any source); its editor_manifest.json explains changes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.io.sources import resolve_source
    from editor.pipeline.diff import diff_checkpoints

    report = diff_checkpoints(resolve_source(args.a), resolve_source(args.b), progress=not args.json)
    print(report.to_json() if args.json else report.render())
    return 0
