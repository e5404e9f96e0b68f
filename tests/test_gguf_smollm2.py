"""GGUF on the built-in SmolLM2 (slow): three plans exported, converted to f32 and q8_0 by llama.cpp's own converter
and quantizer, and proved in llama.cpp against transformers; and the residual add shown to reach llama.cpp.

One conversion per plan, shared by every assertion about it (a session-wide memo). Run with ``-s`` to see the
numbers `wedit verify --llama-cpp` prints.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow
THREADS = ("--threads", "1")  # one thread is the fastest on a CPU shared with other jobs


def _unit(vector: np.ndarray) -> list[float]:
    return (vector / np.linalg.norm(vector)).tolist()


def _plans(base: Path) -> dict[str, list[dict]]:
    from transformers import AutoTokenizer

    from editor.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(base)
    embedding = ckpt.read_raw(ckpt.info().tensor_name("model.embed_tokens")).astype(np.float64)
    cats = embedding[AutoTokenizer.from_pretrained(base)(" cats", add_special_tokens=False)["input_ids"][0]]
    rng = np.random.default_rng(0)
    return {
        # zero_heads + a residual add after block 14's MLP, baked into down_proj biases that mlp_bias turns on
        "heads_residual": [
            {"kind": "zero_heads", "layer": 3, "heads": [0, 5]},
            {"kind": "zero_heads", "layer": 20, "heads": [7]},
            {"kind": "residual_add", "layer": 14, "site": "mlp", "vector": (12 * np.array(_unit(cats))).tolist()},
        ],
        # every residual writer and the embedding; SmolLM2 is tied, so the export gets its own lm_head
        "ablate": [{"kind": "ablate_direction", "direction": _unit(rng.standard_normal(576))}],
        "rank_one": [
            {"kind": "rank_one", "layer": 10, "site": "mlp", "u": (4 * np.array(_unit(cats))).tolist(),
             "v": _unit(rng.standard_normal(1536)), "scale": 3.0},
            {"kind": "rank_one", "layer": 8, "site": "attn", "head": 2, "u": (4 * np.array(_unit(cats))).tolist(),
             "v": _unit(rng.standard_normal(64)), "scale": 3.0},
        ],
    }  # fmt: skip


def _run(*args: str) -> str:
    result = wedit(*args)
    assert result.returncode == 0, f"wedit {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


PLANS = ["heads_residual", "ablate", "rank_one"]


@pytest.fixture(scope="module", params=PLANS)
def built(request, smollm2_dir, tmp_path_factory):
    """Each plan exported, converted to f32 and q8_0 and verified in llama.cpp once per module.

    Module scope with parameters makes pytest run every test of one plan before building the next, so one build
    (about 1 GB) is on disk at a time and is removed as soon as its tests are done."""
    work = tmp_path_factory.mktemp(f"gguf-{request.param}")
    try:
        yield _build(request.param, smollm2_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build(name: str, smollm2_dir: Path, work: Path) -> tuple[str, Path, dict]:
    plan = work / "plan.json"
    plan.write_text(json.dumps(_plans(smollm2_dir)[name]))
    out = work / f"smollm2-{name}"
    times = {}
    start = time.monotonic()
    if name == "rank_one":  # the export command's own --gguf
        _run(
            "export",
            "--model",
            str(smollm2_dir),
            "--plan",
            str(plan),
            "--out",
            str(out),
            "--gguf",
            "f32,q8_0",
            *THREADS,
        )
    else:
        _run("export", "--model", str(smollm2_dir), "--plan", str(plan), "--out", str(out))
        _run("gguf", str(out), "--type", "f32,q8_0", *THREADS)  # --type: argparse's prefix of --types
    times["export+gguf"] = time.monotonic() - start
    start = time.monotonic()
    printed = _run("verify", str(out), "--llama-cpp", *THREADS)
    times["verify"] = time.monotonic() - start
    print(f"\n[{name}] {printed}\n[{name}] seconds: {', '.join(f'{k} {v:.0f}' for k, v in times.items())}")
    return name, out, json.loads((out / "editor_manifest.json").read_text())


def test_f32_gguf_matches_transformers_and_q8_0_sits_beside_the_base(built):
    name, out, manifest = built
    check = manifest["verification"]["llama_cpp"]
    assert check["passed"] and check["prompts"] == 8 and check["identical"] >= 7, check["continuations"]
    assert check["max_first_token_logprob_diff"] < 1e-3 and check["top1_agree"] == 8
    assert check["tokenized_alike"] == 8 and check["kv_cache"] == "f32"
    (q8,) = check["types"]
    assert q8["type"] == "q8_0" and q8["passed"]
    assert 0 < q8["base_first_token_kl"] < 0.02 and 0 < q8["first_token_kl"] < 0.05, q8
    assert manifest["verification"]["transformers"]["passed"]
    files = manifest["gguf"]["files"]
    assert set(files) == {"f32", "q8_0"} and manifest["gguf"]["gguf_arch"] == "llama"
    for gguf_type, entry in files.items():
        path = out.parent / entry["file"]
        assert path == out / f"{out.name}-{gguf_type}.gguf" and path.stat().st_size == entry["bytes"]
    assert files["q8_0"]["bytes"] < files["f32"]["bytes"] / 3


def test_gguf_header_and_card_say_what_was_done(built):
    import gguf

    name, out, manifest = built
    reader = gguf.GGUFReader(out / f"{out.name}-q8_0.gguf")

    def field(key: str) -> str:
        return reader.get_field(key).contents()

    assert field("general.architecture") == "llama"
    assert field("wedit.edits") == "\n".join(manifest["edits_described"])
    assert field("wedit.base_model") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert field("general.description").startswith("HuggingFaceTB/SmolLM2-135M-Instruct with weights edited by wedit")
    assert "llama-cpp-python 0.3.36" in field("wedit.gguf_tool")
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) == (name == "ablate")  # the untied lm_head reaches llama.cpp
    card = (out / "README.md").read_text()
    assert f"FROM ./{out.name}-q8_0.gguf" in card and f"ollama create {out.name} -f Modelfile" in card
    assert "- llama.cpp (llama-cpp-python 0.3.36, no hooks, F32 KV cache): the f32 GGUF gives" in card
    assert "q8_0: first-token KL" in card and "gguf" in card.split("---")[1]


@pytest.mark.parametrize("built", ["heads_residual"], indirect=True)  # joins that plan's build, not a fourth one
def test_residual_add_reaches_llama_cpp(built, tmp_path):
    """The f32 GGUF holds the export's float32 bias bit for bit; zeroed there, llama.cpp's continuations leave
    transformers', so the match above is the bias at work in llama.cpp's graph."""
    import gguf
    from transformers import AutoTokenizer

    from editor.io.checkpoint import Checkpoint
    from editor.pipeline.gguf.verify import LlamaCpp, _trim

    _, out, manifest = built
    bias = Checkpoint.open(out).read_raw("model.layers.14.mlp.down_proj.bias")
    assert bias.dtype == np.float32 and np.abs(bias).max() > 0.1
    copy = tmp_path / "no-bias.gguf"
    shutil.copyfile(out / f"{out.name}-f32.gguf", copy)
    reader = gguf.GGUFReader(copy, "r+")
    (stored,) = [t for t in reader.tensors if t.name == "blk.14.ffn_down.bias"]
    assert np.array_equal(np.asarray(stored.data), bias)
    stored.data[:] = 0
    reader.data.flush()
    del reader

    tokenizer = AutoTokenizer.from_pretrained(out)
    rows = manifest["verification"]["llama_cpp"]["continuations"]
    engine = LlamaCpp(copy, 96, 1)
    same = 0
    for row in rows:
        _, tokens = engine.greedy(
            tokenizer(row["prompt"])["input_ids"], manifest["verification"]["llama_cpp"]["max_new_tokens"]
        )
        same += tokenizer.decode(_trim(tokens, {tokenizer.eos_token_id})) == row["transformers"]
    engine.close()
    print(f"\nwithout blk.14.ffn_down.bias: {same}/{len(rows)} greedy continuations as transformers' on the export")
    assert sum(r["identical"] for r in rows) >= 7 and same <= 2
