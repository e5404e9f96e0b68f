"""`wedit steer`: steering vectors from labelled statements, a hooked sweep, and one plan per bake."""

from __future__ import annotations

import argparse

from editor.cli.common import add_model, add_output, add_threads, analysis_run
from editor.core.settings import add_flags, from_flags
from editor.methods.steer.settings import METHODS, SteerSettings


def register(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_flags(p, SteerSettings, group="steering settings (the recipe's steer section)")
    add_output(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.methods.steer.sweep import run_steer

    settings = from_flags(SteerSettings, args)
    report = analysis_run(args, lambda model, tokenizer, info, tmp: run_steer(model, tokenizer, info, tmp, settings))
    print(f"base: association gap {report.base_gap:.3f}, WikiText-2 perplexity {report.base_perplexity:.2f}")
    for method in METHODS:
        point = report.chosen.get(method)
        if point is None:
            print(f"{method}: no point lowers the gap within +{settings.damage_budget:.0%} perplexity; see sweep.json")
        else:
            print(
                f"{method}: layer {point.layer}, alpha {point.alpha:g} ({point.variant}): gap {point.gap:.3f}, perplexity "
                f"{point.perplexity:.2f} ({point.perplexity / report.base_perplexity - 1:+.1%}), KL {point.kl:.3f} "
                f"-> {args.out}/plan_{method}.json" + (" (= plan.json)" if method == settings.method else "")
            )
    return 0
