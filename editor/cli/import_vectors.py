"""`wedit import-vectors`: turn a llama.cpp/repeng control vector, or safetensors vectors, into a residual_add plan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from editor.cli.common import add_output


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="control vector .gguf (llama.cpp / repeng) or .safetensors with a .json sidecar")
    p.add_argument("--model", required=True, help="the model the vectors are for (any source)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="strength, as llama.cpp's --control-vector-scaled (default 1)"
    )
    p.add_argument(
        "--layers", help="inclusive block range to keep, e.g. 10-20 (llama.cpp's --control-vector-layer-range)"
    )
    add_output(p, "plan JSON to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.core.plan import Plan
    from editor.io.atomic import refuse_existing, write_text
    from editor.io.checkpoint import Checkpoint
    from editor.io.sources import resolve_source
    from editor.methods.import_vectors import check_scale, parse_layer_range, read_vectors, span

    out = Path(args.out)
    refuse_existing(out, args.force)
    layers = parse_layer_range(args.layers)
    info = Checkpoint.open(resolve_source(args.model)).info()
    everything = read_vectors(args.file)
    vectors = everything.select(layers)
    edits = vectors.to_edits(info, check_scale(args.scale))
    plan = json.loads(Plan(edits=edits).to_json())
    plan["imported_from"] = {
        "file": Path(args.file).name,
        "site": vectors.site,
        "scale": args.scale,
        "model_hint": vectors.model_hint,
    }
    write_text(out, json.dumps(plan, indent=2) + "\n")
    where = "after block" if vectors.site == "block" else "after the attention of block"
    print(
        f"wrote {out}: {len(edits)} residual_add edits ({where} {', '.join(str(e.layer) for e in edits)}), scale {args.scale:g}"
    )
    print(
        f"imported layers {span(vectors.vectors)}"
        + (f" (of {span(everything.vectors)} in the file)" if layers else " (every layer in the file)")
    )
    if Path(args.file).suffix == ".gguf" and not layers:
        print(
            "note: a repeng or llama.cpp control vector file holds a direction for every layer it was trained on, while "
            "run-time steering usually applies a subset (repeng's ControlModel layer_ids, llama.cpp's "
            "--control-vector-layer-range). To bake the model you steered, pass the same blocks: --layers A-B "
            "(e.g. repeng layer_ids=range(13, 26) is --layers 13-25)."
        )
    return 0
