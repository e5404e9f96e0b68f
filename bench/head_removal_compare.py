"""Zeroed vs mean-ablated vs scaled: the same heads removed three ways, scored with hooks on bias and damage.

Reads a BiasScope run directory (`wedit attribute --out DIR`, or a recipe run's `attribute/` folder) and, for
the head sets named by ``--sets`` (the saturation set and the chosen set by default), removes them with each
removal and measures the held-out stereotype logit gap (the run's own evaluation pairs) and WikiText-2
perplexity on the evaluation's token budget (the first ``--wiki-tokens`` tokens, 4096 like `wedit eval`).
Prints a markdown table.

    .venv/bin/python bench/head_removal_compare.py runs/smollm2-always_late/attribute --bias always_late
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from editor.core.hooks import hooked
from editor.data import wikitext_txt
from editor.data.biases import get_preset
from editor.engines.loading import load_model, load_tokenizer
from editor.evaluation.metrics import perplexity, wikitext_tokens
from editor.io.checkpoint import Checkpoint
from editor.io.sources import DEFAULT_BUILTIN, resolve_source
from editor.methods.attribute.ksweep import wikitext_tail
from editor.methods.attribute.pairs import load_pairs
from editor.methods.attribute.pipeline import PromptEncoder, stereotype_gap
from editor.methods.attribute.removal import Removal, head_means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="BiasScope run directory")
    parser.add_argument("--bias", required=True)
    parser.add_argument("--model", default=DEFAULT_BUILTIN)
    parser.add_argument("--sets", default="saturation,chosen", help="which head sets: saturation, chosen")
    parser.add_argument("--scales", default="0.5")
    parser.add_argument("--wiki-tokens", type=int, default=4096)
    parser.add_argument("--mean-tokens", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(1)

    result = json.loads((args.run / f"{args.bias}.attribution.json").read_text())
    pairs = load_pairs(args.run / f"{args.bias}.eval_pairs.jsonl")
    path = resolve_source(args.model, progress=False)
    model, tokenizer, info = load_model(path), load_tokenizer(path), Checkpoint.open(path).info()
    encoder = PromptEncoder(tokenizer)
    preset = get_preset(args.bias)
    yb, yu = encoder.first_token(result["biased_answer"]), encoder.first_token(result["unbiased_answer"])
    tokens = wikitext_tokens(tokenizer, wikitext_txt(None), args.wiki_tokens)
    means = head_means(model, info, wikitext_tail(tokenizer, wikitext_txt(None), args.mean_tokens))
    removals = [Removal("zero"), Removal("mean")] + [Removal("scale", float(s)) for s in args.scales.split(",")]

    start = time.perf_counter()
    base_gap = stereotype_gap(model, encoder, pairs, yb, yu, 16)
    base_ppl = perplexity(model, tokens)
    print(f"{preset.name}: base gap {base_gap:.3f}, perplexity {base_ppl:.2f} ({len(tokens)} WikiText-2 tokens)\n")
    print("| heads | removal | gap | gap change | perplexity | change |")
    print("|---|---|---|---|---|---|")
    for which in args.sets.split(","):
        point = result[which]
        if not point:
            continue
        heads = [tuple(h) for h in point["heads"]]
        names = f"{which} (k = {point['k']}, {len(heads)} heads)"
        for removal in removals:
            with hooked(model, removal.edits(heads, means), info):
                gap, ppl = stereotype_gap(model, encoder, pairs, yb, yu, 16), perplexity(model, tokens)
            print(
                f"| {names} | {removal.label} | {gap:.3f} | {gap - base_gap:+.3f} | {ppl:.2f} | {ppl / base_ppl - 1:+.1%} |"
            )
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
