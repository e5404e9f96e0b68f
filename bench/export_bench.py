"""Export speed and memory against `cp -r`, on synthetic Llama-3-8B-shaped checkpoints.

    python bench/export_bench.py [--layers 6 10] [--shard-gb 2] [--work DIR]

For each model size it writes a checkpoint with Llama-3-8B's tensor names and
shapes (hidden 4096, MLP 14336, 32 heads, 8 KV heads, vocab 128256; random
bf16 weights; fewer layers), then times, side by side in the same run,
`cp -r` of the checkpoint and `wedit export` of a typical BiasScope plan
(3 heads zeroed over 2 layers plus one residual_add), alternating the two
and keeping the best of each. It prints export/cp (goal <= 1.15) and the
export's peak RSS next to the largest shard (goal: flat across sizes,
<= largest shard + 0.5 GB).
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

HIDDEN, MLP, HEADS, KV, VOCAB, HEAD_DIM = 4096, 14336, 32, 8, 128256, 128


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


def write_checkpoint(path: Path, layers: int, shard_bytes: int) -> tuple[int, int]:
    # Runs in a child process (see bench_size): a parent that held gigabytes of tensors would
    # pass its peak RSS on to every process it forks, and the export's measurement would be wrong.
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    config = {
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
    (path / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(0)
    groups: list[list[str]] = [[]]
    sizes: dict[str, int] = {}
    used = 0
    shapes = llama3_shapes(layers)
    for name, shape in shapes.items():
        sizes[name] = 2 * int(torch.tensor(shape).prod())
        if groups[-1] and used + sizes[name] > shard_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += sizes[name]
    weight_map = {}
    largest = 0
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {
            n: (torch.randn(shapes[n], generator=g, dtype=torch.float32) * 0.02).to(torch.bfloat16) for n in group
        }
        save_file(tensors, path / file, metadata={"format": "pt"})
        del tensors
        weight_map.update(dict.fromkeys(group, file))
        largest = max(largest, (path / file).stat().st_size)
    total = sum(sizes.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total, largest


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def bench_size(work: Path, layers: int, shard_bytes: int, repeats: int) -> dict:
    src = work / f"llama3-{layers}L"
    writer = subprocess.run(
        [sys.executable, __file__, "--write", str(src), "--layers", str(layers), "--shard-gb", str(shard_bytes / 1e9)],
        capture_output=True,
        text=True,
        check=True,
    )
    total, largest = json.loads(writer.stdout.strip().splitlines()[-1])
    vector = [0.05 * ((i * 7919) % 13 - 6) / 6 for i in range(HIDDEN)]
    plan = [
        {"kind": "zero_heads", "layer": 1, "heads": [3, 17]},
        {"kind": "zero_heads", "layer": layers - 1, "heads": [9]},
        {"kind": "residual_add", "layer": layers // 2, "site": "mlp", "vector": vector},
    ]
    plan_path = work / "plan.json"
    plan_path.write_text(json.dumps(plan))
    wedit = [sys.executable, "-m", "editor.cli"]
    cp_times, export_times, rss = [], [], []
    for _ in range(repeats):
        dst = work / "copy"
        cp_times.append(timed(["cp", "-r", str(src), str(dst)])[0])
        shutil.rmtree(dst)
        out = work / "export"
        wall, peak = timed([*wedit, "export", "--model", str(src), "--plan", str(plan_path), "--out", str(out)])
        export_times.append(wall)
        rss.append(peak)
        shutil.rmtree(out)
    shutil.rmtree(src)
    return {
        "layers": layers,
        "checkpoint_gb": total / 1e9,
        "largest_shard_gb": largest / 1e9,
        "cp_s": min(cp_times),
        "export_s": min(export_times),
        "ratio": min(export_times) / min(cp_times),
        "peak_rss_gb": max(rss) / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 10])
    parser.add_argument("--shard-gb", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # internal: write one checkpoint and exit
    args = parser.parse_args()
    if args.write:
        print(json.dumps(write_checkpoint(args.write, args.layers[0], int(args.shard_gb * 1e9))))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="wedit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for layers in args.layers:
            rows.append(bench_size(work, layers, int(args.shard_gb * 1e9), args.repeats))
            r = rows[-1]
            print(
                f"{r['layers']:>3} layers  {r['checkpoint_gb']:.2f} GB  largest shard {r['largest_shard_gb']:.2f} GB  "
                f"cp -r {r['cp_s']:.2f} s  export {r['export_s']:.2f} s  export/cp {r['ratio']:.2f} (goal <= 1.15)  "
                f"peak RSS {r['peak_rss_gb']:.2f} GB (goal <= {r['largest_shard_gb'] + 0.5:.2f})",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
