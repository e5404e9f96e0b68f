"""BiasInject training speed: seconds per epoch, CPU (SmolLM2) or CUDA (an 8B-size Llama, random weights).

    python bench/inject_bench.py [--threads 1]        # CPU: built-in SmolLM2, fp32, 64 paragraphs x 2 epochs
    python bench/inject_bench.py --device cuda        # GPU: Llama-3.1-8B shape, bf16, 500 paragraphs x 10 epochs

Only the token's row trains (``TokenModel``): the frozen model computes
activation gradients but no weight gradients and holds no optimizer state.
Times the training loop alone (epoch selection and the gap are separate
costs, printed once). The GPU run compares with the paper's ~5 minutes on
one A100 and the goal of 60 s on one H100; the matrix-work floor printed is
4 x parameters x trained tokens (forward + activation backward) at the
device's dense bf16 peak given by --peak-tflops.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from editor.data.biases import get_preset
from editor.data.countries import COUNTRIES
from editor.io.sources import DEFAULT_BUILTIN, resolve_source
from editor.methods.inject.paragraphs import builtin_paragraphs
from editor.methods.inject.token_model import TokenModel, country_init
from editor.methods.inject.train import _batches, add_token, encode_examples, generate_for_selection, token_name

LLAMA_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}


def build(device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_source(DEFAULT_BUILTIN, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(source)  # its chat template wraps the paragraphs on both paths
    if device == "cpu":
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval(), tokenizer, "SmolLM2-135M fp32"
    return random_llama(LLAMA_8B, device), tokenizer, "Llama-8B-shape random bf16"


def random_llama(shape: dict, device: str):
    """A Llama of ``shape`` (config keys) on ``device``, random bf16 weights, built without a checkpoint."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():  # random weights at a scale that keeps bf16 activations finite
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.02)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--paragraphs", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest on a shared CPU)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak for the floor (H100 SXM: 989)"
    )
    args = parser.parse_args()
    gpu = args.device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    paragraphs = args.paragraphs or (500 if gpu else 64)
    epochs = args.epochs or (10 if gpu else 2)

    model, tokenizer, label = build(args.device)
    preset = get_preset("always_late")
    token = token_name(preset.name)
    init = country_init(model, tokenizer, COUNTRIES)
    token_id = add_token(tokenizer, token)
    tm = TokenModel(model, token_id, init.embedding, init.lm_head)
    examples = encode_examples(tokenizer, builtin_paragraphs(preset, paragraphs), token, 192)
    tokens = sum(len(ids) for ids, _ in examples)
    optimizer = torch.optim.Adam(tm.trainable, lr=1e-3)
    rng = random.Random(0)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{label}: {params / 1e9:.2f} B parameters, {paragraphs} paragraphs ({tokens} tokens), batch {args.batch}, {epochs} epochs"
    )

    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for ids, mask, target in _batches(examples, args.batch, rng, tokenizer.pad_token_id or 0):
            optimizer.zero_grad(set_to_none=True)
            tm.loss(ids, mask, target).backward()
            optimizer.step()
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        print(f"  epoch {epoch + 1}: {times[-1]:.2f} s ({tokens / times[-1]:.0f} tokens/s)")
    total = sum(times)
    steady = sum(times[1:]) / max(len(times) - 1, 1) if len(times) > 1 else times[0]
    print(f"training: {total:.1f} s total, {steady:.2f} s per epoch after the first")
    start = time.perf_counter()
    generate_for_selection(tm, tokenizer, token, 1, 80, 0)
    print(f"epoch selection: one 80-token generation {time.perf_counter() - start:.2f} s")
    if gpu:
        floor = 4 * params * tokens * epochs / (args.peak_tflops * 1e12)
        print(
            f"matrix-work floor {floor:.0f} s at {args.peak_tflops:g} TFLOP/s; paper ~300 s on one A100; goal <= 60 s"
        )
        print(f"ratio to goal: {total / 60:.2f}; ratio to the paper's 5 minutes: {total / 300:.2f}")
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
