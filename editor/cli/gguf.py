"""`wedit gguf`: an export as GGUF files for llama.cpp and Ollama (llama.cpp's own converter and quantizer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.cli.common import add_threads
from editor.core.settings import add_flags, from_flags
from editor.pipeline.settings import GgufSettings


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a directory written by `wedit export`")
    p.add_argument(
        "--out",
        help="FILE.gguf to write; several types write FILE-TYPE.gguf each (default: DIR/NAME-TYPE.gguf, "
        "inside the export, so `wedit push` publishes them)",
    )
    p.add_argument("--force", action="store_true", help="replace GGUF files that exist")
    add_flags(p, GgufSettings)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.pipeline.gguf.build import write_gguf

    settings = from_flags(GgufSettings, args)
    result = write_gguf(
        Path(args.dir),
        settings,
        out=Path(args.out) if args.out else None,
        force=args.force,
        threads=args.threads or 1,
    )
    report(result)
    print(f"prove them in llama.cpp: wedit verify {args.dir} --llama-cpp")
    return 0


def report(result) -> None:
    print(f"llama.cpp architecture {result.gguf_arch}; converted to f32 in {result.convert_seconds:.1f} s")
    for item in result.files:
        print(f"wrote {item.path} ({item.type}, {item.bytes / 2**20:.0f} MiB, {item.seconds:.1f} s)")
    for note in result.notes:
        print(f"note: {note}")
