"""`wedit export`: bake a plan of edits into a new checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.cli.common import add_output
from editor.core.settings import add_flags, from_flags
from editor.pipeline.settings import ExportSettings


def register(sub) -> None:
    p = sub.add_parser("export", help="bake a plan of edits into a new checkpoint")
    p.add_argument("--model", required=True, help="model source (see `wedit fetch`)")
    p.add_argument("--plan", required=True, help="plan JSON: a list of edits")
    add_output(p, "directory to write")
    add_flags(p, ExportSettings, skip=("attach_figures",))
    p.add_argument(
        "--attach", nargs="*", default=[], help="figures (PNG) to copy into figures/ and link from the model card"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.core.plan import load_plan
    from editor.io.manifest import portable_command
    from editor.io.sources import resolve_source
    from editor.pipeline.export import export_checkpoint

    settings = from_flags(ExportSettings, args, skip=("attach_figures",))
    plan = load_plan(args.plan)
    source = resolve_source(args.model)
    out = Path(args.out)
    result = export_checkpoint(
        source,
        plan,
        out,
        force=args.force,
        base_source=args.model,
        max_shard_size=settings.max_shard_bytes,
        attachments=[Path(a) for a in args.attach],
        command=portable_command(["wedit", *args.argv], out.absolute().parent, outputs=(args.out,)),
    )
    print(
        f"wrote {result.out}: {len(result.changed)} tensors changed, {len(result.added)} added, "
        f"{len(result.copied_files)} shard(s) copied unchanged"
    )
    for note in result.notes:
        print(f"note: {note}")
    return 0
