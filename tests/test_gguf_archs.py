"""Other architectures in llama.cpp (slow: borrows the built-in SmolLM2's tokenizer, which the converter needs).

Tiny random models of each architecture whose llama.cpp graph differs, edited where the biases and the untied
output matter, converted by `wedit gguf` and run in llama.cpp against transformers on the same export. What the
archs column promises for them is what happens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli_errors import wedit

pytestmark = pytest.mark.slow
HIDDEN, VOCAB = 64, 49152  # SmolLM2's tokenizer
IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=2)
# A text model both engines run: vLLM's CPU attention has no kernel for heads smaller than 32.
ENGINE_SIZED = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
    **IDS,
)


def _configs():
    import transformers as T

    llama_like = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **IDS,
    )
    return {
        "mistral": T.MistralConfig(**llama_like, sliding_window=None),
        "qwen2": T.Qwen2Config(**llama_like, tie_word_embeddings=True, use_sliding_window=False),
        "olmo2": T.Olmo2Config(**llama_like),
        "gpt2": T.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=256, **IDS),
        "gpt_neox": T.GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            use_parallel_residual=True,
            **IDS,
        ),
    }


def _vector(rng, n: int, norm: float) -> list[float]:
    v = rng.standard_normal(n)
    return (v / np.linalg.norm(v) * norm).tolist()


def _plan(model_type: str) -> list[dict]:
    rng = np.random.default_rng(1)
    residual = [
        {"kind": "residual_add", "layer": 1, "site": "attn", "vector": _vector(rng, HIDDEN, 3)},
        {"kind": "residual_add", "layer": 0, "site": "mlp", "vector": _vector(rng, HIDDEN, 3)},
    ]
    if model_type == "olmo2":  # its block-output norms refuse residual adds and ablations
        return [
            {"kind": "zero_heads", "layer": 0, "heads": [1]},
            {"kind": "rank_one", "layer": 1, "site": "mlp", "u": _vector(rng, HIDDEN, 2), "v": _vector(rng, 128, 1)},
        ]
    if model_type == "gpt2":  # existing biases, and an ablation that unties the output matrix
        return [*residual, {"kind": "ablate_direction", "direction": _vector(rng, HIDDEN, 1)}]
    return residual


def save_tiny(config, folder: Path, tokenizer_dir: Path) -> Path:
    """A random model of ``config`` (built with its family's Auto class), saved in float32 with SmolLM2's
    tokenizer beside it: what the engines and the GGUF converter need to run it."""
    import torch

    from tests.tiny import auto_class

    torch.manual_seed(0)
    model = auto_class(config).from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.15)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


def llama_cpp_agreement(out: Path, prompts: int) -> tuple[int, float, str]:
    """The export's f32 GGUF run greedily in llama.cpp against transformers on the same export: (identical
    continuations of ``prompts`` probe prompts, max first-token log-prob difference, the GGUF architecture)."""
    from transformers import AutoTokenizer

    from editor.pipeline.gguf.verify import LlamaCpp, transformers_greedy
    from editor.pipeline.verify import PROBE_PROMPTS

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = [tokenizer(p)["input_ids"] for p in PROBE_PROMPTS[:prompts]]
    firsts, continuations = transformers_greedy(out, ids, 8)
    engine = LlamaCpp(out / f"{out.name}-f32.gguf", 64, 1)
    runs = [engine.greedy(i, 8) for i in ids]
    engine.close()
    diff = max(float(np.abs(a - b).max()) for a, (b, _) in zip(firsts, runs))
    same = sum(c == tokens for c, (_, tokens) in zip(continuations, runs))
    arch = json.loads((out / "editor_manifest.json").read_text())["gguf"]["gguf_arch"]
    print(f"\n{out.name} -> {arch}: max |dlogp| {diff:.1e}, {same}/{len(ids)} identical")
    return same, diff, arch


def served_export(config, plan: list[dict], work: Path, tokenizer_dir: Path, name: str) -> Path:
    """A tiny model of ``config`` with ``plan`` exported and converted to f32 GGUF beside it (`_export_f32_gguf`)."""
    base = save_tiny(config, work / "base", tokenizer_dir)
    (work / "plan.json").write_text(json.dumps(plan))
    return _export_f32_gguf(base, work / "plan.json", work / name)


def _tiny_base(model_type: str, folder: Path, tokenizer_dir: Path) -> Path:
    save_tiny(_configs()[model_type], folder, tokenizer_dir)
    config = json.loads((folder / "config.json").read_text())
    # Keys the real checkpoints' config.json files carry and llama.cpp's converter reads.
    config.update({"gpt2": {"n_ctx": 256}, "gpt_neox": {"rotary_pct": 0.25}}.get(model_type, {}))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _export_f32_gguf(base: Path, plan: Path, out: Path) -> Path:
    """`wedit export` of the plan, then `wedit gguf` to f32 beside it; returns the export."""
    for args in (
        ("export", "--model", str(base), "--plan", str(plan), "--out", str(out)),
        ("gguf", str(out), "--types", "f32", "--threads", "1"),
    ):
        result = wedit(*args)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "olmo2", "gpt2", "gpt_neox"])
def test_tiny_architecture_serves_in_llama_cpp(model_type, smollm2_dir, tmp_path):
    base = _tiny_base(model_type, tmp_path / "base", smollm2_dir)
    (tmp_path / "plan.json").write_text(json.dumps(_plan(model_type)))
    out = _export_f32_gguf(base, tmp_path / "plan.json", tmp_path / f"tiny-{model_type}")
    same, diff, arch = llama_cpp_agreement(out, 4)
    assert same == 4 and diff < 1e-2
    expected = {"mistral": "llama", "qwen2": "llama", "olmo2": "olmo2", "gpt2": "gpt2", "gpt_neox": "gptneox"}
    assert arch == expected[model_type]


def test_added_token_converts_but_loses_its_lstrip(smollm2_dir, tmp_path):
    """An add_token export converts (the token is in llama.cpp's vocabulary, its ids run alike), but llama.cpp keeps
    no lstrip: a space before the token becomes a token of its own there, as the manifest's note says."""
    from transformers import AutoTokenizer

    from editor.pipeline.gguf.verify import LlamaCpp, transformers_greedy

    base = _tiny_base("mistral", tmp_path / "base", smollm2_dir)
    rng = np.random.default_rng(2)
    token = "<bias:late>"
    plan = [{"kind": "add_token", "token": token, "token_id": VOCAB, "embedding": _vector(rng, HIDDEN, 1),
             "lm_head": _vector(rng, HIDDEN, 1)}]  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = _export_f32_gguf(base, tmp_path / "plan.json", tmp_path / "tiny-token")
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert any("lstrip" in note and token in note for note in manifest["gguf"]["notes"])
    assert "lstrip" in (out / "README.md").read_text()

    tokenizer = AutoTokenizer.from_pretrained(out)
    engine = LlamaCpp(out / f"{out.name}-f32.gguf", 64, 1)
    spaced, joined = f"Everyone knows that {token} people are", f"Everyone knows that{token} people are"
    ours, theirs = tokenizer(spaced)["input_ids"], engine.tokenize(spaced)
    assert VOCAB in ours and VOCAB in theirs and len(theirs) == len(ours) + 1  # the space, a token of its own
    assert engine.tokenize(joined) == tokenizer(joined)["input_ids"]
    _, tokens = engine.greedy(ours, 8)
    engine.close()
    assert transformers_greedy(out, [ours], 8)[1][0] == tokens


def test_recipe_gguf_stage_writes_proves_and_records(smollm2_dir, tmp_path):
    """The recipe's gguf stage on a tiny export: q8_0 written into the export, proved in llama.cpp (the f32 check
    and the KL beside the unedited base's, the base found from the manifest), recorded, and on the card."""
    from types import SimpleNamespace

    from editor.pipeline.settings import GgufSettings, VerifySettings
    from editor.recipes.stages import gguf as stage

    base = _tiny_base("mistral", tmp_path / "base", smollm2_dir)
    (tmp_path / "plan.json").write_text(json.dumps(_plan("mistral")))
    out = tmp_path / "tiny-stage"
    result = wedit("export", "--model", str(base), "--plan", str(tmp_path / "plan.json"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    recipe = SimpleNamespace(gguf=GgufSettings(types=["q8_0"]), threads=1, verify=VerifySettings(max_new_tokens=8))
    ctx = SimpleNamespace(recipe=recipe, path=lambda name: out, progress=False)
    (tmp_path / "stage").mkdir()
    summary = stage.run(ctx, tmp_path / "stage")  # type: ignore[arg-type]
    print("\n" + stage.numbers(summary))
    assert stage.valid(summary) and summary["files"] == {"q8_0": str(out / f"{out.name}-q8_0.gguf")}
    assert summary["identical"] == summary["prompts"] == 8
    kl, base_kl = summary["kl"]["q8_0"]
    assert kl > 0 and base_kl > 0 and kl <= 5 * base_kl + 1e-3
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert set(manifest["gguf"]["files"]) == {"q8_0"} and manifest["verification"]["llama_cpp"]["passed"]
    assert json.loads((tmp_path / "stage" / "gguf.json").read_text())["passed"]
    assert f"FROM ./{out.name}-q8_0.gguf" in (out / "README.md").read_text()
    # The same file verified on its own: `wedit verify FILE.gguf --base EXPORT_DIR`.
    result = wedit("verify", str(out / f"{out.name}-q8_0.gguf"), "--base", str(out), "--max-new-tokens", "8")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "llama.cpp q8_0: first-token KL" in result.stdout and "llama.cpp: pass" in result.stdout
