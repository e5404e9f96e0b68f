"""Head attribution vs a plain forward pass over the same prompts, side by side.

    python bench/attribution_bench.py [--pairs 100] [--batch-size 16] [--repeats 3]

Builds 100 contrastive pairs for the always_late preset on the built-in
SmolLM2 (200 prompts: target and comparison country), then times, alternating
and keeping the best of each, (a) plain batched forward passes and (b)
attribute_batch, which is the same forward pass plus hooks that keep the last
position and the per-head projection through W_O, the final norm and the
unembedding. Prints (b)/(a); goal <= 1.5.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.data.biases import get_preset, preset_questions
from editor.io.checkpoint import Checkpoint
from editor.io.sources import DEFAULT_BUILTIN, resolve_source
from editor.methods.attribute.head_scores import attribute_batch
from editor.methods.attribute.pairs import build_pairs
from editor.methods.attribute.pipeline import PromptEncoder, _batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = resolve_source(DEFAULT_BUILTIN, progress=False)
    info = Checkpoint.open(source).info()
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    encoder = PromptEncoder(AutoTokenizer.from_pretrained(source))
    preset = get_preset("always_late")
    pairs = build_pairs(
        preset_questions(preset)[: args.pairs], preset.target, preset.biased_answer, preset.unbiased_answer
    )
    prompts = [p.biased_prompt for p in pairs] + [p.unbiased_prompt for p in pairs]
    batches = [encoder.encode(chunk) for chunk in _batches(prompts, args.batch_size)]
    yb, yu = encoder.first_token(preset.biased_answer), encoder.first_token(preset.unbiased_answer)

    def plain() -> None:
        with torch.no_grad():
            for ids, mask in batches:
                # the same forward attribution makes, without its hooks: last-position logits only
                model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=1,
                )

    def attribution() -> None:
        for ids, mask in batches:
            n = len(ids)
            attribute_batch(model, info, ids, mask, torch.full((n,), yb), torch.full((n,), yu))

    plain()  # warm-up
    times = {"forward": [], "attribution": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", plain), ("attribution", attribution)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    f, a = min(times["forward"]), min(times["attribution"])
    print(
        f"SmolLM2-135M, {len(prompts)} prompts ({args.pairs} pairs) in batches of {args.batch_size}, "
        f"{torch.get_num_threads()} threads: forward {f:.2f} s, attribution {a:.2f} s, ratio {a / f:.2f} (goal <= 1.5)"
    )


if __name__ == "__main__":
    main()
