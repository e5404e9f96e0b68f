"""Generation throughput: stock vLLM (offline, subprocess) vs transformers `generate`, same prompts, same tokens.

    python bench/generation_bench.py [--model DIR] [--prompts 100] [--tokens 64]

Both backends get the evaluation's chat prompts (the first N of the 18 families over the six presets) through
editor.engines.generation's one interface, greedy, fp32, one run each. vLLM's time includes its engine start (it runs in
a fresh process per call, as `wedit eval --generator vllm` does); the engine-only time is printed separately
from vLLM's own log when available. Throughput counts new tokens actually generated.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="checkpoint directory (default: the built-in SmolLM2)")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editor.data.biases import PRESETS
    from editor.data.seegull import load_seegull
    from editor.engines.generation import GenerationParams, TransformersGenerator, VllmGenerator
    from editor.evaluation.prompts import build_prompts
    from editor.io.sources import DEFAULT_BUILTIN, resolve_source

    model_dir = resolve_source(args.model or DEFAULT_BUILTIN, progress=False)
    pairs = load_seegull()
    prompts = [p.text for name in PRESETS for p in build_prompts(PRESETS[name], pairs, groups_per_bias=1)][
        : args.prompts
    ]
    chats = [[{"role": "user", "content": text}] for text in prompts]
    # Greedy with EOS disabled would need backend-specific flags; count the tokens each backend really produced.
    params = GenerationParams(max_new_tokens=args.tokens, temperature=0.0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    load_tf = time.perf_counter() - start
    start = time.perf_counter()
    tf_texts = TransformersGenerator(model, tokenizer, batch_size=args.batch_size, progress=False).generate(
        chats, params
    )
    tf_s = time.perf_counter() - start
    del model

    start = time.perf_counter()
    vl_texts = VllmGenerator(model_dir, progress=False).generate(chats, params)
    vl_s = time.perf_counter() - start

    def count(texts):
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

    tf_tok, vl_tok = count(tf_texts), count(vl_texts)
    same = sum(a == b for a, b in zip(tf_texts, vl_texts))
    print(
        f"model {model_dir}, {len(chats)} prompts x up to {args.tokens} new tokens, greedy fp32, torch threads {torch.get_num_threads()}"
    )
    print(
        f"transformers: load {load_tf:.1f} s, generate {tf_s:.1f} s, {tf_tok} tokens, {tf_tok / tf_s:.1f} tok/s (batch {args.batch_size})"
    )
    print(f"vLLM:         {vl_s:.1f} s including engine start, {vl_tok} tokens, {vl_tok / vl_s:.1f} tok/s")
    print(
        f"vLLM / transformers throughput: {(vl_tok / vl_s) / (tf_tok / tf_s):.2f}x; identical continuations: {same}/{len(chats)}"
    )


if __name__ == "__main__":
    main()
