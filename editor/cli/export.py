"""`wedit export`: bake a plan of edits into a new checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from editor.cli.common import add_output, add_threads
from editor.core.settings import add_flags, from_flags
from editor.pipeline.settings import ExportSettings


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model source (see `wedit fetch`)")
    p.add_argument("--plan", required=True, help="plan JSON: a list of edits")
    add_output(p, "directory to write")
    add_flags(p, ExportSettings, skip=("attach_figures",))
    p.add_argument(
        "--attach", nargs="*", default=[], help="figures (PNG) to copy into figures/ and link from the model card"
    )
    p.add_argument(
        "--gguf",
        metavar="TYPE[,TYPE]",
        help="also write GGUF files of these types into the export, as `wedit gguf` does (e.g. q8_0 or f32,q8_0)",
    )
    add_threads(p)
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
    gguf = _gguf_settings(args.gguf, source, plan) if args.gguf else None
    result = export_checkpoint(
        source,
        plan,
        out,
        force=args.force,
        base_source=args.model,
        max_shard_size=settings.max_shard_bytes,
        attachments=[Path(a) for a in args.attach],
        command=portable_command(["wedit", *args.argv], out.absolute().parent, outputs=(args.out,)),
        allow_non_finite=settings.allow_non_finite,
    )
    if result.non_finite is not None:
        print(
            f"wedit: warning: {result.non_finite.describe()}; copied unchanged as --allow-non-finite asks and "
            f"recorded in {result.out}/editor_manifest.json (non_finite_base); `wedit verify` refuses this export",
            file=sys.stderr,
        )
    print(
        f"wrote {result.out}: {len(result.changed)} tensors changed, {len(result.added)} added, "
        f"{len(result.copied_files)} shard(s) copied unchanged"
    )
    for note in result.notes:
        print(f"note: {note}")
    if gguf is not None:
        from editor.cli.gguf import report
        from editor.pipeline.gguf.build import write_gguf

        report(write_gguf(out, gguf, force=True, threads=args.threads or 1))
    return 0


def _gguf_settings(types: str, source: Path, plan):
    """The --gguf types as GgufSettings, refused before the bake when llama.cpp could not load the result."""
    from editor.core.bake import compile_plan
    from editor.core.settings import validated
    from editor.errors import EditorError
    from editor.io.checkpoint import Checkpoint
    from editor.pipeline.gguf.build import verdict_for
    from editor.pipeline.gguf.converter import llama_cpp_version
    from editor.pipeline.settings import GgufSettings

    try:
        settings = validated(GgufSettings, {"types": [t.strip() for t in types.split(",") if t.strip()]})
    except EditorError as err:
        raise EditorError(f"--gguf {types}: {str(err).partition(': ')[2]}") from None
    llama_cpp_version()  # installed, or a one-line error before any work
    info = Checkpoint.open(source).info()
    program = compile_plan(plan.edits, info)
    verdict = verdict_for(info, [*info.tensors, *program.new_tensors], program.new_config())
    if not verdict.serves:
        raise EditorError(f"--gguf: llama.cpp cannot serve this export: {verdict.reason}; nothing was written")
    return settings
