"""The GPU numbers on an 8B-shaped model, each as a ratio to a plain forward pass over the same inputs.

    python bench/gpu_bench.py [--paragraphs 500] [--epochs 10] [--pairs 256] [--statements 512]

Builds a Llama-3.1-8B-shaped model (32 layers, hidden 4096, GQA 8 KV heads, vocab 128256, untied) with
random weights on the GPU and measures, alternating each method with its plain pass:

  BiasInject   500 paragraphs x 10 epochs of one-row training (bf16, batch 16) against a forward pass
               without gradients over the same batches; goal <= 60 s on one H100
  attribution  attribute_batch on the always_late pairs (float32, batches of 16) against the same
               forward pass without hooks (last-position logits only)
  capture      the steering capture on SeeGULL statements (float32, batches of 32) against the same
               forward pass without hooks

Token ids come from the built-in SmolLM2 tokenizer (its ids are valid in a 128k vocabulary). Run by
bench/gpu.sh; needs one GPU with about 40 GB (the float32 half holds the 8B model at 32 GB).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from inject_bench import LLAMA_8B, random_llama  # the inject benchmark's model (bench/ is on sys.path)

from editor.data.biases import get_preset, preset_questions
from editor.data.countries import COUNTRIES
from editor.data.seegull import load_seegull, stereotypes
from editor.io.sources import DEFAULT_BUILTIN, resolve_source
from editor.methods.attribute.head_scores import attribute_batch
from editor.methods.attribute.pairs import build_pairs
from editor.methods.attribute.pipeline import PromptEncoder, _batches
from editor.methods.inject.paragraphs import builtin_paragraphs
from editor.methods.inject.token_model import TokenModel, country_init
from editor.methods.inject.train import _batches as train_batches
from editor.methods.inject.train import add_token, encode_examples, token_name
from editor.methods.statements import labelled_statements
from editor.methods.steer.capture import capture

DEVICE = "cuda"
TINY = dict(LLAMA_8B, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2)  # fmt: skip


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def build_8b(shape: dict):
    return random_llama(shape, DEVICE)


def bench_inject(model, tokenizer, paragraphs: int, epochs: int) -> None:
    preset = get_preset("always_late")
    token = token_name(preset.name)
    init = country_init(model, tokenizer, COUNTRIES)
    tm = TokenModel(model, add_token(tokenizer, token), init.embedding, init.lm_head)
    examples = encode_examples(tokenizer, builtin_paragraphs(preset, paragraphs), token, 192)
    optimizer = torch.optim.Adam(tm.trainable, lr=1e-3)
    pad = tokenizer.pad_token_id or 0

    def train() -> None:
        rng = random.Random(0)
        for _ in range(epochs):
            for ids, mask, target in train_batches(examples, 16, rng, pad):
                optimizer.zero_grad(set_to_none=True)
                tm.loss(ids, mask, target).backward()
                optimizer.step()

    def forward() -> None:
        rng = random.Random(0)
        with torch.no_grad():
            for _ in range(epochs):
                for ids, mask, target in train_batches(examples, 16, rng, pad):
                    tm.loss(ids, mask, target)

    with torch.no_grad():  # warm-up: kernels chosen and compiled before anything is timed
        tm.loss(*next(train_batches(examples, 16, random.Random(0), pad)))
    forward_s, train_s = timed(forward), timed(train)
    print(
        f"BiasInject {paragraphs} x {epochs} (bf16): training {train_s:.1f} s (goal <= 60 s on one H100), "
        f"plain forward {forward_s:.1f} s, ratio {train_s / forward_s:.2f}",
        flush=True,
    )


def bench_analysis(model, tokenizer, pairs: int, statements: int) -> None:
    from editor.core.model_info import ModelInfo, TensorMeta

    metas = {name: TensorMeta(tuple(t.shape), "F32") for name, t in model.state_dict().items()}
    info = ModelInfo(dict(model.config.to_dict(), model_type="llama"), metas, where="8B config")
    encoder = PromptEncoder(tokenizer)
    preset = get_preset("always_late")
    chosen = build_pairs(preset_questions(preset)[:pairs], preset.target, preset.biased_answer, preset.unbiased_answer)
    prompts = [p.biased_prompt for p in chosen] + [p.unbiased_prompt for p in chosen]
    batches = [encoder.encode(chunk) for chunk in _batches(prompts, 16)]
    yb, yu = encoder.first_token(preset.biased_answer), encoder.first_token(preset.unbiased_answer)

    def plain(batches_: list) -> None:
        with torch.no_grad():
            for ids, mask in batches_:
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                model(
                    input_ids=ids.to(DEVICE),
                    attention_mask=mask.to(DEVICE),
                    position_ids=pos.to(DEVICE),
                    logits_to_keep=1,
                )

    def attribution() -> None:
        for ids, mask in batches:
            n = len(ids)
            attribute_batch(model, info, ids, mask, torch.full((n,), yb), torch.full((n,), yu))

    plain(batches[:1])  # warm-up
    forward_s, attribution_s = timed(lambda: plain(batches)), timed(attribution)
    print(
        f"attribution, {len(prompts)} prompts (float32): {attribution_s:.2f} s, plain forward {forward_s:.2f} s, "
        f"ratio {attribution_s / forward_s:.2f}",
        flush=True,
    )
    all_pairs = load_seegull()
    texts, labels = labelled_statements(stereotypes(all_pairs), all_pairs, statements // 2)
    tokenizer.padding_side = "right"
    text_batches = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start : start + 32], return_tensors="pt", padding=True)
        text_batches.append((batch["input_ids"], batch["attention_mask"]))
    forward_s = timed(lambda: plain(text_batches))
    capture_s = timed(lambda: capture(model, info, tokenizer, texts, labels, batch_size=32))
    print(
        f"steering capture, {len(texts)} statements (float32): {capture_s:.2f} s, plain forward {forward_s:.2f} s, "
        f"ratio {capture_s / forward_s:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paragraphs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--statements", type=int, default=512)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model on the CPU: checks the script runs")
    args = parser.parse_args()
    global DEVICE
    if args.tiny:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_bench.py needs a CUDA device (or --tiny for a CPU check of the script)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(DEFAULT_BUILTIN, progress=False))
    where = "CPU, tiny check" if args.tiny else torch.cuda.get_device_name()
    print(f"{where}: Llama-3.1-8B shape{' (2 small layers)' if args.tiny else ''}, random weights", flush=True)
    model = build_8b(TINY if args.tiny else LLAMA_8B)
    bench_inject(model, tokenizer, args.paragraphs, args.epochs)
    model = model.float()  # analysis runs in float32, as the methods load models
    torch.cuda.empty_cache()
    fresh = AutoTokenizer.from_pretrained(resolve_source(DEFAULT_BUILTIN, progress=False))  # without the new token
    bench_analysis(model, fresh, args.pairs, args.statements)
    if DEVICE == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
