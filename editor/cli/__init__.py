"""`wedit`: the command line. Each command is a module of this package with ``register(sub)`` and ``run(args)``.

Flags of the methods come from their settings objects (``editor.core.settings``), so a recipe field and a
flag are one declaration. Errors the user can fix are one line with exit status 2; an unexpected
exception is one line with exit status 1 (``--debug`` shows the traceback); an evaluation that ran but
fails a damage gate (eval.max_drop) exits with 3.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from editor import __version__
from editor.cli import (
    archs,
    attribute,
    diff,
    eval,
    export,
    fetch,
    fit,
    gguf,
    import_vectors,
    inject,
    push,
    recipes,
    run,
    search,
    steer,
    verify,
)
from editor.errors import EditorError

COMMANDS = (
    archs,
    fetch,
    export,
    verify,
    gguf,
    diff,
    push,
    import_vectors,
    inject,
    attribute,
    steer,
    search,
    fit,
    eval,
    run,
    recipes,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wedit", description="Find a bias in an open-weight LLM and bake the fix into its weights."
    )
    parser.add_argument("--version", action="version", version=f"wedit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded (with portable paths) in what the command writes
    try:
        return args.func(args)
    except EditorError as err:
        print(f"wedit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wedit: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not the user's input: one line, the traceback on request
        if args.debug:
            traceback.print_exc()
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:500]
        print(
            f"wedit: internal error in {args.command}: {reason}; rerun with --debug for the traceback "
            f"(wedit --debug {args.command} ...) and report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
