"""`wedit`: the command line. Each command is a module of this package with ``register(parser)`` and ``run(args)``.

Flags of the methods come from their settings objects (``editor.core.settings``), so a recipe field and a
flag are one declaration. Errors the user can fix are one line with exit status 2; an unexpected
exception is one line with exit status 1 (``--debug`` shows the traceback); an evaluation that ran but
fails a damage gate (eval.max_drop) exits with 3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Collection, Sequence

from editor import __version__
from editor.errors import EditorError

# Every command: its module in this package and its one line in `wedit --help`. Only the command being run is
# imported (its flags come from settings whose modules import torch, transformers or optuna), so `wedit --help` and a
# mistyped flag answer at once; ``build_parser()`` with no command builds them all (the generated CLI reference).
COMMANDS: dict[str, tuple[str, str]] = {
    "archs": ("archs", "print which edit each architecture holds exactly"),
    "fetch": ("fetch", "resolve a model source into a plain checkpoint directory"),
    "export": ("export", "bake a plan of edits into a new checkpoint"),
    "verify": ("verify", "prove an export equals the hooked base (transformers; --vllm for stock vLLM)"),
    "gguf": ("gguf", "convert an export to GGUF for llama.cpp and Ollama (llama.cpp's own converter and quantizer)"),
    "diff": ("diff", "explain how two checkpoints differ, and which recorded edit did it"),
    "push": ("push", "upload a verified export to the Hugging Face Hub"),
    "import-vectors": ("import_vectors", "turn a llama.cpp control vector or safetensors vectors into a plan"),
    "inject": ("inject", "BiasInject: train one bias token (only its row) and write an add_token plan"),
    "attribute": ("attribute", "BiasScope: find the heads that carry a bias and write a plan that removes them"),
    "steer": ("steer", "steering vectors from SeeGULL statements, a hooked sweep, and three plans"),
    "search": (
        "search",
        "search methods, layers, sites and strengths for the least bias within a damage budget (Optuna)",
    ),
    "fit": (
        "fit",
        "train one fitted edit (erase_identity, unlink_mlp) on the build fold; write its plan and held-out report",
    ),
    "eval": ("eval", "bias and damage metrics (likelihood; judge-rated generations), recorded in an export"),
    "run": ("run", "run a recipe: source, attribute/steer, plan, export, verify, card; cached and resumable"),
    "recipes": ("recipes", "list the built-in recipes with their descriptions"),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command's flags, or with those of ``commands`` only (the others keep their names and
    help lines)."""
    parser = argparse.ArgumentParser(
        prog="wedit", description="Find a bias in an open-weight LLM and bake the fix into its weights."
    )
    parser.add_argument("--version", action="version", version=f"wedit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        if commands is None or name in commands:
            importlib.import_module(f"editor.cli.{module}").register(p)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not a flag), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    # An unknown command gets argparse's own message, which lists them all; that needs no module imported.
    args = build_parser([command] if command else []).parse_args(argv)
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
