"""Export memory does not grow with the model: an ablation of every writer and the embedding runs under an
address-space cap of a few tensors above a small export of the same kind, at two model sizes, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from editor.io.tensor_file import Entry, write_safetensors

HIDDEN, MLP, HEADS, KV, VOCAB = 256, 1024, 4, 2, 4096
# The cap above the calibration run, in largest-tensor float32 sizes (the embedding: 4 MB).
TENSORS_OF_HEADROOM = 2

# Runs in a fresh interpreter: a first, small export loads every lazy import and BLAS's buffers; then the
# address space is capped at what is mapped now plus the allowance, the export under test runs, and the child
# reports how far its address space grew and whether torch was ever imported.
CHILD = """
import json, resource, sys
from pathlib import Path
from editor.core.plan import load_plan
from editor.pipeline.export import export_checkpoint

def vm(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def blas_on_two_threads():
    # A thread that calls BLAS while another does takes an OpenBLAS buffer of its own (64 MB of address space,
    # kept for the process's life). The exporter's two workers may both compute, or not, as they happen to be
    # scheduled: reserve both buffers before the cap, so the cap measures the export and not that race.
    import threading
    import numpy as np
    a = np.ones((256, 256), np.float32)
    barrier = threading.Barrier(2)
    def work():
        barrier.wait()
        for _ in range(50):
            a @ a
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

source, warm_up, plan, out, allowance = sys.argv[1:6]
export_checkpoint(Path(source), load_plan(warm_up), Path(out + "-warm-up"), progress=False)
blas_on_two_threads()
start = vm("VmSize")
if int(allowance):
    resource.setrlimit(resource.RLIMIT_AS, (start + int(allowance), resource.RLIM_INFINITY))
export_checkpoint(Path(source), load_plan(plan), Path(out), progress=False)
print(json.dumps({"growth": vm("VmPeak") - start, "torch": "torch" in sys.modules}))
"""
# One malloc arena: a thread's own arena reserves 64 MB of address space up front, which would hide that much
# growth from the cap.
ENV = {"MALLOC_ARENA_MAX": "1"}


def write_llama(path: Path, layers: int) -> Path:
    """A bf16 Llama checkpoint in one file, written with numpy alone."""
    path.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": MLP,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "num_hidden_layers": layers,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    }
    (path / "config.json").write_text(json.dumps(config))
    head_dim = HIDDEN // HEADS
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": (KV * head_dim, HIDDEN),
            p + "self_attn.v_proj.weight": (KV * head_dim, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "mlp.gate_proj.weight": (MLP, HIDDEN),
            p + "mlp.up_proj.weight": (MLP, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, MLP),
        }
    shapes |= {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    rng = np.random.default_rng(layers)
    entries = []
    for name, shape in shapes.items():
        values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32) >> 16
        entries.append(Entry(name, "BF16", shape, values.astype(np.uint16)))
    write_safetensors(path / "model.safetensors", entries, {"format": "pt"})
    return path


def export_growth(
    tmp: Path, source: Path, warm_up: list[dict], plan: list[dict], name: str, allowance: int = 0
) -> dict:
    paths = []
    for suffix, edits in (("warm-up", warm_up), ("plan", plan)):
        paths.append(tmp / f"{name}-{suffix}.json")
        paths[-1].write_text(json.dumps(edits))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), *map(str, paths), str(tmp / name), str(allowance)],
        capture_output=True,
        text=True,
        env=os.environ | ENV,
    )
    assert proc.returncode == 0, f"{name}: export failed under the cap:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layers", [8, 32])
def test_ablation_export_runs_in_a_few_tensors_of_address_space(tmp_path, layers):
    source = write_llama(tmp_path / "base", layers)
    direction = np.random.default_rng(0).standard_normal(HIDDEN).tolist()
    # Calibration: the same child with the same kind of export on one layer's writers only.
    small = [{"kind": "ablate_direction", "direction": direction, "layers": [0], "embedding": False}]
    baseline = export_growth(tmp_path, source, small, small, "baseline")
    largest = 4 * VOCAB * HIDDEN
    allowance = baseline["growth"] + TENSORS_OF_HEADROOM * largest
    full = [{"kind": "ablate_direction", "direction": direction}]
    result = export_growth(tmp_path, source, small, full, "ablation", allowance)
    print(
        f"{layers} layers: baseline growth {baseline['growth'] / 2**20:.1f} MB, ablation {result['growth'] / 2**20:.1f} MB"
    )
    assert not result["torch"], "export imported torch"
    assert (tmp_path / "ablation" / "model.safetensors").stat().st_size == (source / "model.safetensors").stat().st_size
    # The cap can be missed: the edited tensors alone, as stored, need more than the headroom.
    edited_stored = 2 * (layers * (HIDDEN * HIDDEN + HIDDEN * MLP) + VOCAB * HIDDEN)
    if layers == 32:
        assert edited_stored > 2 * TENSORS_OF_HEADROOM * largest
