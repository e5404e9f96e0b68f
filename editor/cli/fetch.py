"""`wedit fetch`: resolve a model source into a standalone plain checkpoint directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from editor.cli.common import add_output


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="checkpoint dir, Hub id org/name, file.gguf, or builtin:smollm2-135m-instruct")
    add_output(p, "directory to write")
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        help="dtype for a GGUF or built-in conversion (default bfloat16)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.io.checkpoint import Checkpoint
    from editor.io.sources import fetch

    out = fetch(args.source, Path(args.out), force=args.force, dtype=args.dtype)
    print(f"wrote {out}")
    found = Checkpoint.open(out).scan_non_finite()
    if found is not None:  # fetched all the same: the user may want to look at the file
        print(
            f"wedit: warning: {found.describe()}; `wedit export` refuses this base unless --allow-non-finite is "
            "given, so fix the source if you can",
            file=sys.stderr,
        )
    return 0
