"""Serving cost of a baked export in stock vLLM: tokens/s of each export next to its base, in one run.

    python bench/serving_bench.py [--prompts 32] [--tokens 64] [--rounds 3] [--work DIR]

Exports three plans from the built-in SmolLM2 (``wedit export``): 3 heads zeroed in two layers
(``zero_heads``: W_O columns set to zero, same tensors); a ``residual_add`` after one MLP (Llama has no
MLP biases, so the export turns on ``mlp_bias`` and adds a zero float32 bias to every gate/up/down
projection, 90 new tensors); and a direction ablated from every writer and the embeddings (which unties
lm_head: one more vocabulary-sized matrix). Then it starts one stock vLLM engine per model (CPU,
float32, each in its own process, loaded once) and alternates them: every round sends the same chat
prompts to each engine in turn (the order rotates between rounds) and times ``LLM.generate`` alone,
greedy, with ``ignore_eos`` so every model generates exactly the same number of tokens. It prints each
engine's tokens/s per round and, per export, the median over rounds of (export / base) measured in the
same round. Goal: 1.00 +/- 0.03.
"""

from __future__ import annotations

import argparse
import json
import os
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


def serve(model: str) -> None:
    """Worker: load one engine, then answer each JSON line on stdin with a timed generate."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=1024, seed=0)
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
    def __init__(self, name: str, model: Path, log: Path):
        self.name = name
        self.log = log.open("w")
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(model)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )

    def answer(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT) :])
        raise SystemExit(f"{self.name}: the vLLM worker stopped; see {self.log.name}")

    def generate(self, prompts: list[str], tokens: int) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"prompts": prompts, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run one engine
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="wedit-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    models = export_models(work)
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(args.prompts)]
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {len(prompts)} prompts x {args.tokens} tokens", flush=True)
    engines = {name: Engine(name, path, work / f"{name}.log") for name, path in models.items()}
    try:
        for engine in engines.values():  # all engines up before any timing
            engine.answer()
        rates: dict[str, list[float]] = {name: [] for name in engines}
        names = list(engines)
        engines["base"].generate(prompts[:4], 8)  # warm-up
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                done = engines[name].generate(prompts, args.tokens)
                rates[name].append(done["tokens"] / done["seconds"])
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f} tok/s" for n in names), flush=True)
    finally:
        for engine in engines.values():
            engine.close()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    for name in names[1:]:
        ratios = [e / b for e, b in zip(rates[name], rates["base"])]
        print(
            f"{name:<13} tokens/s ratio to base: median {statistics.median(ratios):.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; goal 1.00 +/- 0.03)"
        )
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
