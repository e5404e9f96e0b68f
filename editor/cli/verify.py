"""`wedit verify`: prove an export equals the hooked base (transformers; stock vLLM with --vllm)."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    write_card(out, manifest)
    return 0 if ok else 1
