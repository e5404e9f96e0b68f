"""`wedit search`: one Optuna search across steering bakes and head removals, scored on held-out groups."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.cli.common import add_model, add_output, add_threads, load_for_analysis, set_threads
from editor.core.settings import add_flags, from_flags
from editor.methods.search.settings import SearchSettings


def register(sub) -> None:
    p = sub.add_parser(
        "search",
        help="search methods, layers, sites and strengths for the least bias within a damage budget (Optuna)",
    )
    add_model(p)
    add_flags(p, SearchSettings, group="search settings (the recipe's search section)")
    add_output(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.io.atomic import refuse_existing, staged_directory
    from editor.methods.search.run import run_search
    from editor.methods.search.summary import summary_lines

    settings = from_flags(SearchSettings, args)
    refuse_existing(Path(args.out), args.force)
    set_threads(args)
    _, info, model, tokenizer = load_for_analysis(args)
    with staged_directory(Path(args.out), args.force) as tmp:
        report = run_search(model, tokenizer, info, tmp, settings)
    for line in summary_lines(report):
        print(line)
    print(f"-> {args.out}/search.json, {args.out}/pareto.png" + (f", {args.out}/plan.json" if report.chosen else ""))
    return 0
