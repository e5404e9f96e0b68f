"""Export speed and memory against `cp -r`, for four kinds of plan, on synthetic Llama-3-8B-shaped checkpoints.

    python bench/export_bench.py [--layers 6 12] [--shard-gb 1] [--repeats 2] [--plans ...] [--work DIR]

For each model size it writes a checkpoint with Llama-3-8B's tensor names and
shapes (hidden 4096, MLP 14336, 32 heads, 8 KV heads, vocab 128256; random
bf16 weights; fewer layers; a word-level tokenizer with 128256 entries), then
times, side by side in the same run, `cp -r` of the checkpoint and `wedit
export` of each plan, alternating and keeping the best of each:

  biasscope   3 heads zeroed over 2 layers plus one residual_add (adds a zero
              bias to every MLP projection; goal export/cp <= 1.15)
  ablation    one direction projected out of every attention and MLP writer
              and the embeddings (abliteration; goal export/cp <= 1.3)
  steer2edit  4 rank-1 edits per layer (2 heads' W_O blocks, 2 MLP neurons)
  add_token   one token added to the 128256-row embedding and lm_head,
              padded to a multiple of 64 rows

It prints export/cp and each export's peak RSS next to the largest shard
(goal: flat across sizes and plans, <= largest shard + 0.5 GB). Every timed
command starts after a `sync`, so none pays for the previous one's writeback,
and ends after another, so each is timed until its output is on disk (the
export fsyncs before it renames its output into place; `cp -r` does not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN, MLP, HEADS, KV, VOCAB, HEAD_DIM = 4096, 14336, 32, 8, 128256, 128
PLANS = ("biasscope", "ablation", "steer2edit", "add_token")


def llama3_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": (KV * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": (KV * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "mlp.gate_proj.weight": (MLP, HIDDEN),
            p + "mlp.up_proj.weight": (MLP, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, MLP),
        }
    shapes |= {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    return shapes


def config(layers: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": MLP,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "head_dim": HEAD_DIM,
        "num_hidden_layers": layers,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "dtype": "bfloat16",
    }


def random_bf16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    values = rng.standard_normal(shape, dtype=np.float32)
    values *= 0.02
    return (values.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits (truncated; any finite values will do)


def write_tokenizer(path: Path) -> None:
    """A word-level tokenizer with VOCAB entries, so an add_token plan gets id VOCAB as on Llama 3."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "w0"})
    )


def write_checkpoint(path: Path, layers: int, shard_bytes: int) -> tuple[int, int]:
    # Runs in a child process (see bench_size): a parent that held gigabytes would pass its peak RSS on to
    # every process it forks, and the exports' measurements would be wrong.
    from editor.io.tensor_file import nbytes, plan_file, write_at

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config(layers), indent=2))
    write_tokenizer(path)
    rng = np.random.default_rng(0)
    shapes = llama3_shapes(layers)
    groups: list[list[str]] = [[]]
    used = 0
    for name, shape in shapes.items():
        size = nbytes(shape, "BF16")
        if groups[-1] and used + size > shard_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    weight_map = {}
    for i, group in enumerate(groups):
        file = path / f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        header, slots = plan_file(((n, "BF16", shapes[n]) for n in group), {"format": "pt"})
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_at(fd, header, 0)
        for slot in slots:
            step = max(1, (64 << 20) // nbytes(slot.shape[1:], "BF16"))  # 64 MB of rows at a time
            for first in range(0, slot.shape[0], step):
                rows = random_bf16(rng, (min(step, slot.shape[0] - first), *slot.shape[1:]))
                write_at(fd, rows.tobytes(), slot.offset + first * nbytes(slot.shape[1:], "BF16"))
        os.close(fd)
        weight_map.update(dict.fromkeys(group, file.name))
    total = sum(nbytes(s, "BF16") for s in shapes.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    largest = max(f.stat().st_size for f in path.glob("*.safetensors"))
    return total, largest


def unit(rng: np.random.Generator, n: int, norm: float = 1.0) -> list[float]:
    v = rng.standard_normal(n)
    return (norm * v / np.linalg.norm(v)).tolist()


def make_plan(kind: str, layers: int) -> list[dict]:
    rng = np.random.default_rng(1)
    if kind == "biasscope":
        return [
            {"kind": "zero_heads", "layer": 1, "heads": [3, 17]},
            {"kind": "zero_heads", "layer": layers - 1, "heads": [9]},
            {"kind": "residual_add", "layer": layers // 2, "site": "mlp", "vector": unit(rng, HIDDEN, 2.0)},
        ]
    if kind == "ablation":
        return [{"kind": "ablate_direction", "direction": unit(rng, HIDDEN)}]
    if kind == "steer2edit":
        edits = []
        for layer in range(layers):
            for head in (layer % HEADS, (layer * 7 + 5) % HEADS):
                edits.append(
                    {"kind": "rank_one", "layer": layer, "site": "attn", "head": head, "u": unit(rng, HIDDEN),
                     "v": unit(rng, HEAD_DIM), "scale": 0.05}
                )  # fmt: skip
            for neuron in (layer * 37 % MLP, layer * 1009 % MLP):
                edits.append(
                    {"kind": "rank_one", "layer": layer, "site": "mlp", "neuron": neuron, "u": unit(rng, HIDDEN),
                     "scale": 0.05}
                )  # fmt: skip
        return edits
    if kind == "add_token":
        return [
            {"kind": "add_token", "token": "<bias:bench>", "token_id": VOCAB, "embedding": unit(rng, HIDDEN, 0.5),
             "lm_head": unit(rng, HIDDEN, 0.5), "pad_to_multiple_of": 64}
        ]  # fmt: skip
    raise ValueError(kind)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall time until the output is on disk, and peak RSS (bytes), of one child process.

    A sync before starts each command with no one else's writeback pending; a sync after, inside the timing,
    makes both sides durable: the export fsyncs its files before renaming them into place (so a crash never
    leaves a half-written model), and `cp -r` alone would stop timing while its data still sits in the page
    cache."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start, usage.ru_maxrss * 1024


def bench_size(work: Path, layers: int, shard_bytes: int, repeats: int, plans: list[str]) -> list[dict]:
    src = work / f"llama3-{layers}L"
    writer = subprocess.run(
        [sys.executable, __file__, "--write", str(src), "--layers", str(layers), "--shard-gb", str(shard_bytes / 1e9)],
        capture_output=True,
        text=True,
        check=True,
    )
    total, largest = json.loads(writer.stdout.strip().splitlines()[-1])
    plan_paths = {}
    for kind in plans:
        plan_paths[kind] = work / f"plan-{kind}.json"
        plan_paths[kind].write_text(json.dumps(make_plan(kind, layers)))
    wedit = [sys.executable, "-m", "editor.cli"]
    cp_times: list[float] = []
    export_times: dict[str, list[float]] = {k: [] for k in plans}
    rss: dict[str, list[int]] = {k: [] for k in plans}
    try:
        for _ in range(repeats):
            for kind in ["cp", *plans]:  # cp -r, then each export, in turn
                out = work / "out"
                if kind == "cp":
                    cp_times.append(timed(["cp", "-r", str(src), str(out)])[0])
                else:
                    cmd = [*wedit, "export", "--model", str(src), "--plan", str(plan_paths[kind]), "--out", str(out)]
                    wall, peak = timed(cmd)
                    export_times[kind].append(wall)
                    rss[kind].append(peak)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(src)
    cp = min(cp_times)
    return [
        {
            "layers": layers,
            "plan": kind,
            "checkpoint_gb": total / 1e9,
            "largest_shard_gb": largest / 1e9,
            "cp_s": cp,
            "export_s": min(export_times[kind]),
            "ratio": min(export_times[kind]) / cp,
            "peak_rss_gb": max(rss[kind]) / 1e9,
            "all_cp_s": cp_times,
            "all_export_s": export_times[kind],
        }
        for kind in plans
    ]


GOALS = {"biasscope": 1.15, "ablation": 1.3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--shard-gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS))
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # internal: write one checkpoint and exit
    args = parser.parse_args()
    if args.write:
        print(json.dumps(write_checkpoint(args.write, args.layers[0], int(args.shard_gb * 1e9))))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="wedit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    try:
        for layers in args.layers:
            for r in bench_size(work, layers, int(args.shard_gb * 1e9), args.repeats, args.plans):
                rows.append(r)
                goal = f" (goal <= {GOALS[r['plan']]})" if r["plan"] in GOALS else ""
                print(
                    f"{r['layers']:>3} layers {r['checkpoint_gb']:.2f} GB  {r['plan']:<10}  cp -r {r['cp_s']:6.2f} s  "
                    f"export {r['export_s']:6.2f} s  export/cp {r['ratio']:.2f}{goal}  peak RSS "
                    f"{r['peak_rss_gb']:.2f} GB (bound {r['largest_shard_gb'] + 0.5:.2f})",
                    flush=True,
                )
            print(f"load average: {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
