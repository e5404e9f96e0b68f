"""Bigger than memory: the slowdown of attribution, steering capture and BiasInject training when accelerate
keeps most of the model on disk, next to the same work on the model held in memory.

    python bench/offload_bench.py [--max-memory cpu=150MB] [--pairs 32] [--statements 64] [--repeats 2]

The built-in SmolLM2 (float32, ~540 MB) is loaded twice: whole, and with ``device_map="auto"`` plus a
``max_memory`` that leaves most decoder layers on disk (read in by accelerate's hooks for each forward
pass). Alternating the two and keeping the best of each, it times head attribution (``attribute_batch``,
batches of 16), the steering capture (``capture``) and one BiasInject epoch (8 paragraphs, batch 4), and
prints offloaded / in-memory for each. The results themselves are compared in tests/test_offload.py.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import torch

from editor.data.biases import get_preset, preset_questions
from editor.data.countries import COUNTRIES
from editor.data.seegull import load_seegull, stereotypes
from editor.engines.loading import load_model, load_tokenizer
from editor.io.checkpoint import Checkpoint
from editor.io.sources import DEFAULT_BUILTIN, ModelSettings, resolve_source
from editor.methods.attribute.head_scores import attribute_batch
from editor.methods.attribute.pairs import build_pairs
from editor.methods.attribute.pipeline import PromptEncoder, _batches
from editor.methods.inject.paragraphs import builtin_paragraphs
from editor.methods.inject.token_model import TokenModel, country_init
from editor.methods.inject.train import add_token, encode_examples, token_name, train_epoch
from editor.methods.statements import labelled_statements
from editor.methods.steer.capture import capture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-memory", default="cpu=150MB")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--statements", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = resolve_source(DEFAULT_BUILTIN, progress=False)
    info = Checkpoint.open(source).info()
    where = ModelSettings(device_map="auto", max_memory=[args.max_memory])
    models = {
        "in memory": load_model(source),
        "offloaded": load_model(source, device_map=where.device_map, max_memory=where.memory_limits()),
    }
    places = Counter(str(v) for v in models["offloaded"].hf_device_map.values())
    print(f"offloaded placement ({args.max_memory}): {dict(places)}")

    tokenizer = load_tokenizer(source)
    encoder = PromptEncoder(tokenizer)
    preset = get_preset("always_late")
    pairs = build_pairs(
        preset_questions(preset)[: args.pairs], preset.target, preset.biased_answer, preset.unbiased_answer
    )
    prompts = [p.biased_prompt for p in pairs] + [p.unbiased_prompt for p in pairs]
    batches = [encoder.encode(chunk) for chunk in _batches(prompts, 16)]
    yb, yu = encoder.first_token(preset.biased_answer), encoder.first_token(preset.unbiased_answer)
    all_pairs = load_seegull()
    texts, labels = labelled_statements(stereotypes(all_pairs), all_pairs, args.statements // 2)
    paragraphs = builtin_paragraphs(preset, 8)

    def attribution(model) -> None:
        for ids, mask in batches:
            n = len(ids)
            attribute_batch(model, info, ids, mask, torch.full((n,), yb), torch.full((n,), yu))

    def steering_capture(model) -> None:
        capture(model, info, load_tokenizer(source), texts, labels, batch_size=16)

    def inject_epoch(model) -> None:
        tok = load_tokenizer(source)
        token = token_name(preset.name)
        init = country_init(model, tok, COUNTRIES)
        tm = TokenModel(model, add_token(tok, token), init.embedding, init.lm_head)
        optimizer = torch.optim.Adam(tm.trainable, lr=1e-2)
        examples = encode_examples(tok, paragraphs, token, 160)
        train_epoch(tm, optimizer, examples, 4, random.Random(0), tok.eos_token_id, progress=False)
        model.requires_grad_(False)

    work = {"attribution": attribution, "steering capture": steering_capture, "inject epoch": inject_epoch}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for task, fn in work.items():
            for name, model in models.items():
                start = time.perf_counter()
                fn(model)
                times.setdefault((task, name), []).append(time.perf_counter() - start)
    for task in work:
        resident, offloaded = min(times[(task, "in memory")]), min(times[(task, "offloaded")])
        print(
            f"{task:<17} in memory {resident:7.2f} s  offloaded {offloaded:7.2f} s  slowdown {offloaded / resident:.2f}x"
        )


if __name__ == "__main__":
    main()
