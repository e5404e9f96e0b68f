"""`wedit verify`: prove an export equals the hooked base (transformers; stock vLLM with --vllm)."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.cli.common import add_threads
from editor.core.settings import add_flags, from_flags
from editor.pipeline.settings import VerifySettings


def register(sub) -> None:
    p = sub.add_parser("verify", help="prove an export equals the hooked base (transformers; --vllm for stock vLLM)")
    p.add_argument("dir", help="a directory written by `wedit export`")
    add_flags(p, VerifySettings)
    p.add_argument(
        "--base",
        help="the base checkpoint, when the manifest's built-in name, Hub id or relative location does not find it",
    )
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.pipeline.card import write_card
    from editor.pipeline.verify import record, verify_transformers, verify_vllm

    settings = from_flags(VerifySettings, args)
    out = Path(args.dir)
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


def _llama_cpp(out: Path, args: argparse.Namespace, max_new_tokens: int):
    from editor.pipeline.gguf.verify import describe, record_llama_cpp, verify_llama_cpp

    check = verify_llama_cpp(out, base=args.base, max_new_tokens=max_new_tokens, threads=args.threads or 1)
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
