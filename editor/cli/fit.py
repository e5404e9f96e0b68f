"""`wedit fit METHOD`: one trained fit on its own (erase_identity or unlink_mlp), its plan and held-out report."""

from __future__ import annotations

import argparse

from editor.cli.common import add_model, add_output, add_threads, analysis_run
from editor.core.settings import add_flags, from_flags, validated
from editor.methods.fit.settings import FIT_METHODS, FitSettings

SECTIONS = ("method", *FIT_METHODS)


def register(p: argparse.ArgumentParser) -> None:
    fits = p.add_subparsers(dest="fit_method", required=True, metavar="METHOD")
    for method in FIT_METHODS:
        section = FitSettings.model_fields[method]
        q = fits.add_parser(method, help=section.description)
        add_model(q)
        add_flags(q, section.annotation, group=f"{method} settings (the recipe's fit.{method} section)")
        add_flags(q, FitSettings, skip=SECTIONS, group="data and report (the recipe's fit section)")
        add_output(q)
        add_threads(q)
        q.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> FitSettings:
    method = args.fit_method
    section = from_flags(FitSettings.model_fields[method].annotation, args)
    general = from_flags(FitSettings, args, skip=SECTIONS)
    return validated(FitSettings, {**general.model_dump(), "method": method, method: section.model_dump()})


def run(args: argparse.Namespace) -> int:
    from editor.methods.fit.run import run_fit, summary_lines

    settings = settings_from(args)
    report = analysis_run(args, lambda model, tokenizer, info, tmp: run_fit(model, tokenizer, info, tmp, settings))
    for line in summary_lines(report):
        print(line)
    print(f"-> {args.out}/plan.json, {args.out}/fit.json, {args.out}/losses.png")
    return 0
