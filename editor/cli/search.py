"""`wedit search`: one Optuna search across steering bakes and head removals, scored on held-out groups."""

from __future__ import annotations

import argparse

from editor.cli.common import add_model, add_output, add_threads, analysis_run
from editor.core.settings import add_flags, from_flags
from editor.methods.search.settings import SearchSettings


def register(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_flags(p, SearchSettings, group="search settings (the recipe's search section)")
    add_output(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.methods.search.report import summary_lines
    from editor.methods.search.run import run_search

    settings = from_flags(SearchSettings, args)
    report = analysis_run(args, lambda model, tokenizer, info, tmp: run_search(model, tokenizer, info, tmp, settings))
    for line in summary_lines(report):
        print(line)
    print(f"-> {args.out}/search.json, {args.out}/pareto.png" + (f", {args.out}/plan.json" if report.chosen else ""))
    return 0
