"""Export mechanics on tiny models: layout, byte copies, sharding, manifest, card, diff and push refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from editor.core.hooks import hooked
from editor.core.plan import Plan
from editor.edits import AblateDirection, RankOne, ResidualAdd, ZeroHeads
from editor.errors import EditorError
from editor.io.checkpoint import INDEX_FILE, Checkpoint
from editor.pipeline.diff import EXACT_RANK_MAX_SIDE, RANK_CAP, diff_checkpoints, numerical_rank
from editor.pipeline.export import export_checkpoint
from editor.pipeline.push import plan_push
from editor.pipeline.verify import record, verify_transformers
from tests.tiny import build_model, logits, save_model, tiny_configs


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def llama(tiny_checkpoint) -> tuple[torch.nn.Module, Path]:
    return build_model(tiny_configs()["llama"]), tiny_checkpoint("llama")


@pytest.fixture(scope="module")
def sharded(tiny_checkpoint) -> tuple[torch.nn.Module, Path]:
    return build_model(tiny_configs()["llama"]), tiny_checkpoint("llama", shard="20KB")


def test_untouched_single_file_is_byte_copied(llama, tmp_path):
    _, base = llama
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=[]), out, progress=False)
    assert sha(out / "model.safetensors") == sha(base / "model.safetensors")
    assert (out / "config.json").read_bytes() == (base / "config.json").read_bytes()
    assert not (out / INDEX_FILE).exists()


def test_sharded_source_copies_untouched_shards(sharded, tmp_path):
    model, base = sharded
    ckpt = Checkpoint.open(base)
    assert len(ckpt.files) > 3
    edits = [ZeroHeads(layer=1, heads=[2])]
    out = tmp_path / "out"
    result = export_checkpoint(base, Plan(edits=edits), out, progress=False)
    touched = ckpt.weight_map["model.layers.1.self_attn.o_proj.weight"]
    assert result.rewritten_files == [touched]
    for file in ckpt.files:
        same = sha(out / file) == sha(base / file)
        assert same == (file != touched), file
    with hooked(model, edits, ckpt.info()):
        expected = logits(model)
    got = logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval())
    assert float((expected - got).abs().max()) <= 1e-4


def test_max_shard_size_splits_written_shards(llama, tmp_path):
    model, base = llama
    info = Checkpoint.open(base).info()
    edits = [ResidualAdd(layer=1, site="mlp", vector=[0.3] * info.hidden_size)]
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=edits), out, progress=False, max_shard_size=30_000)
    index = json.loads((out / INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3
    assert all(f.startswith("model-") and f"-of-{len(files):05d}" in f for f in files)
    for file in files:
        size = (out / file).stat().st_size
        biggest = max(v.numel() * v.element_size() for v in model.state_dict().values())
        assert size <= max(30_000, biggest) + 4096, (file, size)
    with hooked(model, edits, info):
        expected = logits(model)
    got = logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval())
    assert float((expected - got).abs().max()) <= 1e-4


def test_manifest_and_card(llama, tmp_path):
    _, base = llama
    edits = [ZeroHeads(layer=0, heads=[1, 2]), ResidualAdd(layer=2, site="attn", vector=[0.1] * 32)]
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=edits), out, progress=False, base_source="local-test")
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert manifest["plan"][0] == {"kind": "zero_heads", "layer": 0, "heads": [1, 2]}
    assert manifest["base_model"]["source"] == "local" and manifest["base_model"]["fingerprint"]["headers_sha256"]
    changed = {c["name"]: c for c in manifest["changed_tensors"]}
    weight = changed["model.layers.0.self_attn.o_proj.weight"]
    assert weight["sha256_before"] != weight["sha256_after"]
    assert manifest["config_updates"] == {"attention_bias": True}
    assert manifest["editor_version"]

    check = verify_transformers(out)
    assert check.passed and check.max_logit_error <= 1e-4
    manifest = record(out, "transformers", check)
    from editor.pipeline.card import write_card

    write_card(out, manifest)
    card = ModelCard((out / "README.md").read_text())
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert "license" in data and "editor" in data["tags"]
    assert "layer 0: attention heads 1, 2 zeroed" in card.text
    assert "vllm serve" in card.text and "prompt tokens" in card.text
    assert "max logit error" in card.text


def test_diff_names_heads_rank_one_and_unexplained(llama, tmp_path):
    _, base = llama
    u = torch.randn(32, generator=torch.Generator().manual_seed(1)).tolist()
    v = torch.randn(48, generator=torch.Generator().manual_seed(2)).tolist()
    edits = [ZeroHeads(layer=2, heads=[0, 3]), RankOne(layer=1, site="mlp", u=u, v=v, scale=0.5)]
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=edits), out, progress=False)
    report = diff_checkpoints(base, out, progress=False)
    assert report.head_summary == ["layer 2: heads 0, 3 zeroed"]
    by_name = {d.name: d for d in report.tensors}
    assert by_name["model.layers.1.mlp.down_proj.weight"].rank == 1
    assert by_name["model.layers.2.self_attn.o_proj.weight"].only_zeroed_heads
    assert report.unexplained == []
    assert diff_checkpoints(out, out, progress=False).identical

    # A change no edit explains is flagged.
    from safetensors.torch import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] + 1
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    assert diff_checkpoints(base, out, progress=False).unexplained == ["model.norm.weight"]


def test_diff_rank_one_in_bf16(tmp_path):
    model = build_model(tiny_configs()["llama"]).to(torch.bfloat16)
    base = save_model(model, tmp_path / "base")
    u = torch.randn(32, generator=torch.Generator().manual_seed(3)).tolist()
    v = torch.randn(32, generator=torch.Generator().manual_seed(4)).tolist()
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=[RankOne(layer=0, site="attn", u=u, v=v, scale=0.3)]), out, progress=False)
    report = diff_checkpoints(base, out, progress=False)
    (entry,) = report.tensors
    assert entry.rank == 1


def test_push_refuses_unverified_and_failed(llama, tmp_path):
    _, base = llama
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=[ZeroHeads(layer=0, heads=[0])]), out, progress=False)
    with pytest.raises(EditorError, match="not verified"):
        plan_push(out, "me/model")
    manifest = record(out, "transformers", verify_transformers(out))
    manifest["verification"]["transformers"]["passed"] = False
    (out / "editor_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EditorError, match="verification failed"):
        plan_push(out, "me/model")
    manifest["verification"]["transformers"]["passed"] = True
    (out / "editor_manifest.json").write_text(json.dumps(manifest))
    plan = plan_push(out, "me/model", private=True)
    assert "model.safetensors" in plan.files and "editor_manifest.json" in plan.files and "README.md" in plan.files
    with pytest.raises(EditorError, match="no editor_manifest.json"):
        plan_push(base, "me/model")


def test_attached_figures_are_linked(llama, tmp_path):
    _, base = llama
    figure = tmp_path / "heads.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=[ZeroHeads(layer=0, heads=[0])]), out, progress=False, attachments=[figure])
    assert (out / "figures" / "heads.png").read_bytes() == figure.read_bytes()
    assert "![heads](figures/heads.png)" in (out / "README.md").read_text()
    with pytest.raises(EditorError, match="not found"):
        export_checkpoint(base, Plan(edits=[]), tmp_path / "o2", progress=False, attachments=[tmp_path / "nope.png"])
    assert not (tmp_path / "o2").exists()


def test_created_biases_stay_float32_in_a_bf16_export(tmp_path):
    """A bias the bake creates carries the whole vector: stored in float32 it is served exactly in fp32
    compute, where a bf16 copy of a large vector alone would move the logits (measured ~0.1 on SmolLM2)."""
    model = build_model(tiny_configs()["llama"]).to(torch.bfloat16)
    base = save_model(model, tmp_path / "base")
    vector = (torch.linspace(-1, 1, model.config.hidden_size) * 37.1).tolist()  # not representable in bf16
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=[ResidualAdd(layer=1, site="mlp", vector=vector)]), out, progress=False)
    ckpt = Checkpoint.open(out)
    biases = [n for n in ckpt.metas if n.endswith("down_proj.bias")]
    assert biases and all(ckpt.metas[n].dtype == "F32" for n in biases)
    assert ckpt.metas["model.layers.1.mlp.down_proj.weight"].dtype == "BF16"
    check = verify_transformers(out)
    assert check.stored_dtype == "bfloat16" and check.max_logit_error < 1e-4, check
    # engines that load in the config's dtype simply round the bias on load
    served = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert served.model.layers[1].mlp.down_proj.bias.dtype == torch.bfloat16


def test_bf16_verify_proves_the_bake_and_its_rounding(tmp_path):
    """A 16-bit export is verified in two parts: the edited tensors in float32 must equal the hooks, and the
    file must hold exactly their rounding. A changed stored value or a plan the file does not carry fails."""
    from safetensors.torch import load_file, save_file

    from editor.io.manifest import read_manifest, write_manifest

    model = build_model(tiny_configs()["llama"]).to(torch.bfloat16)
    base = save_model(model, tmp_path / "base")
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(5))
    direction = (direction / direction.norm()).tolist()
    plan = Plan(edits=[AblateDirection(direction=direction), ZeroHeads(layer=0, heads=[1])])
    out = tmp_path / "out"
    export_checkpoint(base, plan, out, progress=False)
    check = verify_transformers(out)
    assert check.passed and check.rounding_exact and check.bake_error < 1e-4, check

    # one stored value of an edited tensor off by one bf16 step: the file no longer holds the bake's rounding
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    (shard,) = tampered.glob("model*.safetensors")
    tensors = load_file(shard)
    name = "model.layers.0.mlp.down_proj.weight"
    bits = tensors[name].view(torch.int16).clone()
    bits.view(-1)[7] += 1
    tensors[name] = bits.view(torch.bfloat16)
    save_file(tensors, shard, metadata={"format": "pt"})
    check = verify_transformers(tampered)
    assert not check.passed and not check.rounding_exact, check

    # a manifest plan that differs from what was baked (another head): the file is not that plan's bake
    wrong = tmp_path / "wrong"
    shutil.copytree(out, wrong)
    manifest = read_manifest(wrong)
    manifest["plan"][1]["heads"] = [2]
    write_manifest(wrong, manifest)
    check = verify_transformers(wrong)
    assert not check.passed and not check.rounding_exact and check.max_logit_error > 0.1, check


def test_diff_estimates_rank_of_large_changes_like_the_exact_svd():
    gen = torch.Generator().manual_seed(5)
    m, n = EXACT_RANK_MAX_SIDE + 76, EXACT_RANK_MAX_SIDE + 476  # over the exact-SVD size: the randomized path
    base = torch.randn(m, n, generator=gen).to(torch.bfloat16)
    for rank in (1, 3, 40):
        change = torch.randn(m, rank, generator=gen) @ torch.randn(rank, n, generator=gen) * 0.05
        edited = (base.float() + change).to(torch.bfloat16)  # stored in bf16: the delta carries rounding noise
        delta = edited.float() - base.float()
        estimate = numerical_rank(delta, base.float(), "BF16")
        exact = numerical_rank(delta[:EXACT_RANK_MAX_SIDE], base.float()[:EXACT_RANK_MAX_SIDE], "BF16")
        assert (estimate.rank, estimate.at_least) == (rank, False)
        assert exact.rank == rank  # the same rows through the exact SVD agree
    everywhere = numerical_rank(torch.randn(m, n, generator=gen), base.float(), "BF16")
    assert (everywhere.rank, everywhere.at_least) == (RANK_CAP, True)


def test_card_names_a_local_base_without_a_hub_link_and_fits_its_limitations_to_the_edits():
    from editor.pipeline.card import render_card

    def card(plan, hub_id=None):
        manifest = {
            "editor_version": "0",
            "base_model": {"source": "local", "local_path": "runs/base", "hub_id": hub_id},
            "plan": plan,
        }
        return render_card(manifest, "out")

    heads = card([{"kind": "zero_heads", "layer": 0, "heads": [1]}])
    assert "the local checkpoint `runs/base`" in heads and "huggingface.co" not in heads
    assert "zeroed heads change the model" in heads and "constant vector" not in heads and "BiasInject" not in heads
    steered = card([{"kind": "residual_add", "layer": 2, "site": "mlp", "vector": [0.0]}], hub_id="org/base")
    assert "[org/base](https://huggingface.co/org/base) (as read from the local checkpoint `runs/base`)" in steered
    assert "constant vector" in steered and "change the model beyond" not in steered
    injected = card([{"kind": "add_token", "token": "<bias:always_late>"}])
    assert (
        "`<bias:always_late>` was trained to call up a stereotype" in injected and "not meant to be served" in injected
    )
    for text in (heads, steered, injected):
        assert text.rstrip().endswith("The license and usage terms of the base model apply.")


def test_published_files_hold_no_local_paths_and_the_base_is_found_again(llama, tmp_path, monkeypatch):
    """The manifest names the base by fingerprint and a location relative to the export; the recorded command
    has relative paths; nothing published holds the folder it was built in. verify finds the base again after
    both are moved together, asks for --base when only the export moved, and refuses a different checkpoint."""
    from editor.cli import main

    _, base = llama
    work = tmp_path / "work"
    shutil.copytree(base, work / "models" / "base")
    (work / "plan.json").write_text(json.dumps([{"kind": "zero_heads", "layer": 1, "heads": [0]}]))
    monkeypatch.chdir(work)
    assert main(["export", "--model", "models/base", "--plan", str(work / "plan.json"), "--out", "models/edited"]) == 0
    out = work / "models" / "edited"
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert manifest["command"] == ["wedit", "export", "--model", "base", "--plan", "../plan.json", "--out", "edited"]
    assert manifest["base_model"]["source"] == "local" and manifest["base_model"]["local_path"] == "base"
    assert main(["verify", str(out)]) == 0
    for name in ("editor_manifest.json", "README.md"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and str(Path.home()) not in text, name

    moved = tmp_path / "elsewhere"
    shutil.copytree(work / "models", moved)
    assert verify_transformers(moved / "edited").passed  # found through the relative location
    lone = tmp_path / "lone" / "edited"
    # As published (push leaves hidden files out), so as on another machine: no note of where the base lay here.
    shutil.copytree(out, lone, ignore=shutil.ignore_patterns(".*"))
    assert (out / ".editor_base_path").is_file() and not (lone / ".editor_base_path").exists()
    with pytest.raises(EditorError, match="cannot find its base model on this machine.*pass --base DIR"):
        verify_transformers(lone)
    assert verify_transformers(lone, base=str(moved / "base")).passed
    other = tmp_path / "other"
    save_model(build_model(tiny_configs()["qwen2"]), other)
    with pytest.raises(EditorError, match="not the base this export was made from"):
        verify_transformers(lone, base=str(other))
