"""`wedit archs`: which edit each architecture holds exactly, and why the others are refused."""

from __future__ import annotations

import argparse
import json


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.core.architectures import ARCHITECTURES
    from editor.core.capabilities import COLUMNS, LLAMA_CPP, matrix, matrix_markdown

    if args.json:
        print(json.dumps({mt: {c: cap.__dict__ for c, cap in row.items()} for mt, row in matrix().items()}, indent=2))
        return 0
    if args.markdown:
        print(matrix_markdown())
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edit x architecture (exact = hook and bake agree; tests prove it)", show_lines=True)
    table.add_column("model_type (class)")
    columns = (*COLUMNS, LLAMA_CPP)
    for col in columns:
        table.add_column(col)
    colours = {"exact": "green", "via": "yellow", "refused": "red", "all": "green", "some": "yellow", "none": "red"}
    for mt, row in matrix().items():
        cells = []
        for col in columns:
            cap = row[col]
            colour = colours[cap.status]
            cells.append(f"[{colour}]{cap.render()}[/{colour}]")
        table.add_row(f"{mt}\n({ARCHITECTURES[mt].causal_lm_class})", *cells)
    Console(width=max(160, Console().width)).print(table)
    return 0
