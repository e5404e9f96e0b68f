"""The built-in model end to end: fetch matches the GGUF, and a baked plan matches its hooks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.cli import main
from editor.core.hooks import hooked
from editor.core.plan import Plan
from editor.edits import ResidualAdd, ZeroHeads
from editor.io.checkpoint import Checkpoint
from editor.io.sources import BUILTINS
from editor.pipeline.export import export_checkpoint

pytestmark = pytest.mark.slow
PROMPT = "Continue this sentence: People from Italy are known for"


def greedy_reply(model, tokenizer) -> str:
    messages = [{"role": "user", "content": PROMPT}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def next_token_logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(PROBES, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits.float()
    return logits[batch["attention_mask"].bool()]


PROBES = ["People from Italy are known for", "The history of the river valley begins with", "A good way to learn is"]


def test_fetch_builtin_matches_gguf(tmp_path, smollm2_dir):
    """The fetched copy is the GGUF's model: equal to it in float32, and within bf16 rounding in the default dtype.

    Greedy strings are compared only between models of the same dtype and compute precision: across dtypes a
    near-tie can flip a token, so the bf16 copy is compared through its logits and next-token KL instead."""
    builtin = BUILTINS["smollm2-135m-instruct"]
    folder = next(iter(importlib.util.find_spec(builtin.package).submodule_search_locations))
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=builtin.gguf_file, dtype=torch.float32).eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=builtin.gguf_file)
    gguf_tokenizer.padding_side = "right"
    reference = next_token_logits(gguf_model, gguf_tokenizer)

    exact = tmp_path / "smol32"
    assert main(["fetch", "builtin:smollm2-135m-instruct", "--out", str(exact), "--dtype", "float32"]) == 0
    model32 = AutoModelForCausalLM.from_pretrained(exact, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(exact)
    tokenizer.padding_side = "right"
    assert tokenizer(PROBES)["input_ids"] == gguf_tokenizer(PROBES)["input_ids"]
    err32 = float((next_token_logits(model32, tokenizer) - reference).abs().max())
    ours, theirs = greedy_reply(model32, tokenizer), greedy_reply(gguf_model, gguf_tokenizer)
    print(f"\nfloat32 fetch vs GGUF: max logit difference {err32:.2e}\nfetched: {ours!r}\ngguf:    {theirs!r}")
    assert err32 <= 1e-4
    assert ours == theirs and len(ours.split()) >= 3  # same dtype, same compute: greedy strings are comparable

    out = tmp_path / "smol"
    assert main(["fetch", "builtin:smollm2-135m-instruct", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    logits = next_token_logits(model, tokenizer)
    err16 = float((logits - reference).abs().max())
    log_p, log_q = torch.log_softmax(reference, -1), torch.log_softmax(logits, -1)
    kl = float((log_p.exp() * (log_p - log_q)).sum(-1).max())
    print(f"bfloat16 fetch vs GGUF (float32 compute): max logit difference {err16:.3f}, max next-token KL {kl:.2e}")
    # bf16 keeps 8 bits of mantissa: its rounding moves logits by tenths, never the distribution as a whole.
    assert 1e-3 < err16 <= 1.0
    assert kl <= 1e-2

    # The fetched copy keeps its provenance, so an export made from the copy still names the upstream model.
    from huggingface_hub import metadata_load

    meta = metadata_load(out / "README.md")
    assert meta["base_model"] == builtin.hub_id and meta["license"] == "apache-2.0"
    edited = tmp_path / "edited"
    export_checkpoint(out, Plan(edits=[ZeroHeads(layer=3, heads=[0])]), edited, progress=False)
    card = (edited / "README.md").read_text()
    assert metadata_load(edited / "README.md")["base_model"] == builtin.hub_id
    assert (
        f"[{builtin.hub_id}](https://huggingface.co/{builtin.hub_id}) (as read from the local checkpoint `smol`)"
        in card
    )
    assert str(tmp_path) not in card and str(tmp_path) not in (edited / "editor_manifest.json").read_text()


def test_smollm2_bake_matches_hooks(tmp_path, smollm2_dir):
    info = Checkpoint.open(smollm2_dir).info()
    vector = torch.randn(info.hidden_size, generator=torch.Generator().manual_seed(0))
    edits = [
        ZeroHeads(layer=3, heads=[0, 5]),
        ZeroHeads(layer=20, heads=[7]),
        ResidualAdd(layer=15, site="mlp", vector=(4.0 * vector / vector.norm()).tolist()),
    ]
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.padding_side = "right"
    batch = tokenizer(
        ["People from Italy are known for", "The history of the city begins", "Hello"],
        return_tensors="pt",
        padding=True,
    )
    mask = batch["attention_mask"].unsqueeze(-1)
    with torch.no_grad():
        base = model(**batch).logits * mask
        with hooked(model, edits, info):
            hooked_logits = model(**batch).logits * mask
    out = tmp_path / "baked"
    export_checkpoint(smollm2_dir, Plan(edits=edits), out, progress=False)
    baked = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        baked_logits = baked(**batch).logits * mask
    err = float((hooked_logits - baked_logits).abs().max())
    effect = float((hooked_logits - base).abs().max())
    print(f"\nSmolLM2 bf16 export: max |hooked - baked| logit error {err:.3e}; edit moved logits by up to {effect:.3f}")
    assert effect > 0.1
    assert err <= 2e-2
    assert Path(out, "tokenizer.json").read_bytes() == Path(smollm2_dir, "tokenizer.json").read_bytes()
