"""The built-in model end to end: fetch matches the GGUF, and a baked plan matches its hooks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editor.checkpoint import Checkpoint
from editor.cli import main
from editor.edits import ResidualAdd, ZeroHeads
from editor.export import export_checkpoint
from editor.hooks import hooked
from editor.plan import Plan
from editor.sources import BUILTINS

pytestmark = pytest.mark.slow
PROMPT = "Continue this sentence: People from Italy are known for"


def greedy_reply(model, tokenizer) -> str:
    messages = [{"role": "user", "content": PROMPT}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_fetch_builtin_matches_gguf(tmp_path, smollm2_dir):
    out = tmp_path / "smol"
    assert main(["fetch", "builtin:smollm2-135m-instruct", "--out", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    builtin = BUILTINS["smollm2-135m-instruct"]
    folder = next(iter(importlib.util.find_spec(builtin.package).submodule_search_locations))
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=builtin.gguf_file)
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=builtin.gguf_file)
    ours, theirs = greedy_reply(model, tokenizer), greedy_reply(gguf_model, gguf_tokenizer)
    print(f"\nfetched: {ours!r}\ngguf:    {theirs!r}")
    assert ours == theirs
    assert len(ours.split()) >= 3
    # The fetched copy keeps its provenance, so an export made from the copy still names the upstream model.
    from huggingface_hub import metadata_load

    meta = metadata_load(out / "README.md")
    assert meta["base_model"] == builtin.hub_id and meta["license"] == "apache-2.0"
    edited = tmp_path / "edited"
    export_checkpoint(out, Plan(edits=[ZeroHeads(layer=3, heads=[0])]), edited, progress=False)
    card = (edited / "README.md").read_text()
    assert metadata_load(edited / "README.md")["base_model"] == builtin.hub_id
    assert f"[{builtin.hub_id}](https://huggingface.co/{builtin.hub_id}) (as read from `{out}`)" in card


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
        ["People from Italy are known for", "The history of the city begins", "Hello"], return_tensors="pt", padding=True
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
