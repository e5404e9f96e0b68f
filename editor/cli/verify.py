"""`wedit verify`: prove an export equals the hooked base (transformers; stock vLLM with --vllm; llama.cpp with
--llama-cpp, or one GGUF file with `wedit verify FILE.gguf --base EXPORT_DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.cli.common import add_threads
from editor.core.settings import add_flags, from_flags
from editor.pipeline.settings import VerifySettings


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", help="a directory written by `wedit export`, or FILE.gguf made from one (then --base names that export)"
    )
    add_flags(p, VerifySettings)
    p.add_argument(
        "--base",
        help="the base checkpoint, when the manifest's built-in name, Hub id or relative location does not find it; "
        "with FILE.gguf, the export the file was made from",
    )
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.pipeline.card import write_card
    from editor.pipeline.verify import multimodal_request, record, verify_transformers, verify_vllm

    settings = from_flags(VerifySettings, args)
    if args.dir.endswith(".gguf"):
        return _gguf_file(Path(args.dir), args, settings.max_new_tokens)
    out = Path(args.dir)
    if settings.vllm and (out / "config.json").is_file():
        multimodal_request(out, "wedit verify --vllm")  # what vLLM cannot load is refused before any work
    check = verify_transformers(out, base=args.base)
    manifest = record(out, "transformers", check)
    print(f"transformers: {check.describe()}")
    ok = check.passed
    if settings.vllm:
        served = verify_vllm(out, max_new_tokens=settings.max_new_tokens)
        manifest = record(out, "vllm", served)
        for row in served.continuations:
            mark = "same" if row["identical"] else "DIFF"
            print(
                f"  [{mark}] {row['prompt']!r} -> {row['transformers']!r}"
                + ("" if row["identical"] else f" | vLLM: {row['vllm']!r}")
            )
        print(
            f"vLLM: {served.identical}/{served.prompts} greedy continuations identical to transformers, "
            f"max first-token log-prob difference {served.max_first_token_logprob_diff:.2e}: "
            f"{'pass' if served.passed else 'FAIL'} (need {served.required_identical})"
        )
        ok = ok and served.passed
    if settings.llama_cpp:
        manifest, passed = _llama_cpp(out, args, settings.max_new_tokens)
        ok = ok and passed
    write_card(out, manifest)
    return 0 if ok else 1


def _gguf_file(file: Path, args: argparse.Namespace, max_new_tokens: int) -> int:
    """`wedit verify FILE.gguf --base EXPORT_DIR`: that one file in llama.cpp against the export in transformers."""
    from editor.errors import EditorError
    from editor.pipeline.card import write_card

    if not file.is_file():
        raise EditorError(f"{file}: no such GGUF file")
    if not args.base:
        raise EditorError(f"wedit verify {file} needs --base EXPORT_DIR: the `wedit export` folder it was made from")
    out = Path(args.base)
    manifest, passed = _llama_cpp(out, args, max_new_tokens, base=None, gguf_file=file)
    write_card(out, manifest)
    return 0 if passed else 1


def _llama_cpp(out: Path, args: argparse.Namespace, max_new_tokens: int, *, base=None, gguf_file=None):
    from editor.pipeline.gguf.verify import describe, record_llama_cpp, verify_llama_cpp

    check = verify_llama_cpp(
        out,
        base=base if gguf_file is not None else args.base,
        max_new_tokens=max_new_tokens,
        threads=args.threads or 1,
        gguf_file=gguf_file,
    )
    manifest = record_llama_cpp(out, check)
    for row in check.continuations:
        mark = "same" if row["identical"] else "DIFF"
        print(
            f"  [{mark}] {row['prompt']!r} -> {row['transformers']!r}"
            + ("" if row["identical"] else f" | llama.cpp: {row['llama_cpp']!r}")
        )
    for line in describe(check):
        print(line)
    for note in check.notes:
        print(f"note: {note}")
    print(f"llama.cpp: {'pass' if check.passed else 'FAIL'}")
    return manifest, check.passed
