"""What several commands share: the model and output arguments, thread count, and loading the model."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from editor.core.settings import add_flags
from editor.io.sources import ModelSettings

# Exit status of `wedit eval` and `wedit run` when everything ran and was written, but the result fails a damage
# gate (eval.max_drop); 2 is a one-line error, 1 an unexpected one.
GATE_FAILED = 3


def add_model(
    parser: argparse.ArgumentParser, *, help: str = "model source: checkpoint dir, Hub id, file.gguf or builtin:NAME"
) -> None:
    """``--model`` (the ``source`` of ModelSettings) and the rest of ModelSettings (``--device-map``, ``--max-memory``)."""
    parser.add_argument("--model", required=True, help=help)
    add_flags(parser, ModelSettings, skip=("source",))


def model_settings(args: argparse.Namespace) -> ModelSettings:
    from editor.core.settings import from_flags

    return from_flags(ModelSettings, args, source=args.model)


def add_output(parser: argparse.ArgumentParser, what: str = "run directory to write") -> None:
    parser.add_argument("--out", required=True, help=f"{what} (must not exist unless --force)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --out if it exists (the old one stays until the new one is complete)",
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def load_for_analysis(args: argparse.Namespace) -> tuple[Path, Any, Any, Any]:
    """Resolve ``--model``; return its directory, ModelInfo, the float32 model and its tokenizer."""
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.io.sources import resolve_source

    settings = model_settings(args)
    source = resolve_source(settings.source)
    info = Checkpoint.open(source).info()
    model = load_model(source, device_map=settings.device_map, max_memory=settings.memory_limits())
    return source, info, model, load_tokenizer(source)


T = TypeVar("T")


def analysis_run(args: argparse.Namespace, work: Callable[[Any, Any, Any, Path], T]) -> T:
    """An analysis command's shape: refuse an existing ``--out`` (unless ``--force``) before loading anything, load
    the model, and run ``work(model, tokenizer, info, folder)`` into a folder built beside ``--out`` and renamed
    into place only when it is complete."""
    from editor.io.atomic import refuse_existing, staged_directory

    refuse_existing(Path(args.out), args.force)
    set_threads(args)
    _, info, model, tokenizer = load_for_analysis(args)
    with staged_directory(Path(args.out), args.force) as tmp:
        return work(model, tokenizer, info, tmp)
