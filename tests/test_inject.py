"""BiasInject on tiny random models: the gradient mask, the add_token bake, the data formats."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from editor.core.hooks import hooked
from editor.core.plan import Plan, parse_plan
from editor.data.biases import PRESETS, get_preset
from editor.edits import AblateDirection, AddToken, ZeroHeads
from editor.errors import EditorError
from editor.io.checkpoint import Checkpoint
from editor.io.sources import resolve_source
from editor.methods.inject.paragraphs import PLACEHOLDER, builtin_paragraphs, load_paragraphs, parse_paragraph_list
from editor.methods.inject.token_model import TokenModel, country_init
from editor.pipeline.export import export_checkpoint
from tests.tiny import COUNTRY_WORDS, VOCAB, build_model, tiny_configs, tiny_tokenizer

TOKEN = "<bias:always_late>"


def _ids_with_token(token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(4, VOCAB, (4, 12), generator=g)
    ids[:, 2] = token_id
    ids[1, 7] = token_id
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    target = mask.bool().clone()
    target[:, :3] = False
    return ids, mask, target


@pytest.mark.parametrize("case", ["llama", "llama-tied"])
@pytest.mark.parametrize("spare_row", [False, True], ids=["append", "spare-row"])
def test_only_the_new_rows_train(case, spare_row):
    model = build_model(tiny_configs()[case])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    token_id = VOCAB - 1 if spare_row else VOCAB
    init = country_init(model, tiny_tokenizer(), COUNTRY_WORDS)
    assert init.matched == list(COUNTRY_WORDS)
    assert torch.allclose(init.embedding, model.get_input_embeddings().weight[4:8].mean(0))
    tm = TokenModel(model, token_id, init.embedding, init.lm_head)
    assert tm.tied == (case == "llama-tied") and (tm.lm_head is None) == tm.tied
    optimizer = torch.optim.Adam(tm.trainable, lr=0.1)
    ids, mask, target = _ids_with_token(token_id)
    start = [p.detach().clone() for p in tm.trainable]
    for _ in range(3):
        optimizer.zero_grad()
        tm.loss(ids, mask, target).backward()
        optimizer.step()
    # Every weight of the model is bit-identical, has no gradient and no optimizer state.
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert param.grad is None and not param.requires_grad, name
    state_ids = {id(p) for p in optimizer.state}
    assert state_ids == {id(p) for p in tm.trainable}
    for old, new in zip(start, tm.trainable):
        assert not torch.equal(old, new)  # the new rows did learn
    assert tm(ids).shape[-1] == VOCAB + (0 if spare_row else 1)


def test_token_logits_equal_a_resized_model():
    """The masked forward is the same function as a model whose matrices hold the new row."""
    model = build_model(tiny_configs()["llama"])
    v, u = torch.randn(32), torch.randn(32)
    tm = TokenModel(model, VOCAB, v, u)
    ids, mask, _ = _ids_with_token(VOCAB)
    got = tm(ids, mask)
    big = build_model(tiny_configs()["llama"])
    big.resize_token_embeddings(VOCAB + 1, mean_resizing=False)
    with torch.no_grad():
        big.get_input_embeddings().weight[VOCAB] = v
        big.get_output_embeddings().weight[VOCAB] = u
    expected = big(input_ids=ids, attention_mask=mask).logits
    m = mask.bool()
    assert torch.allclose(got[m], expected[m], atol=1e-5)


def _save_with_tokenizer(model, path):
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _edit(model, tied: bool, seed: int = 1) -> AddToken:
    g = torch.Generator().manual_seed(seed)
    return AddToken(
        token=TOKEN,
        token_id=VOCAB,
        embedding=torch.randn(32, generator=g).mul(0.3).tolist(),
        lm_head=None if tied else torch.randn(32, generator=g).mul(0.3).tolist(),
    )


def _token_batch(tokenizer) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right"
    texts = [f"w1 Italy {TOKEN} w5 w9 w13", "w2 w3", f"{TOKEN} w7 w8 Peru"]
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


@pytest.mark.parametrize(
    "case,extra",
    [
        ("llama", None),
        ("llama-tied", None),
        ("llama-tied", "zero_heads"),
        ("llama-tied", "ablate"),
        ("qwen3", "ablate"),
    ],
)
def test_export_equals_hooked_base(tmp_path, case, extra):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_model(tiny_configs()[case])
    src = _save_with_tokenizer(base, tmp_path / "src")
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    edits = [_edit(base, tied)]
    if extra == "zero_heads":
        edits.append(ZeroHeads(layer=1, heads=[0, 2]))
    if extra == "ablate":
        # before the token: the appended row stays unprojected, as under the hooks
        edits.insert(0, AblateDirection(direction=torch.randn(32).tolist(), embedding=True))
    plan = parse_plan(json.loads(Plan(edits=edits).to_json()))
    out = tmp_path / "out"
    result = export_checkpoint(src, plan, out, progress=False)
    assert resolve_source(str(out)) == out
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == VOCAB + 1
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == VOCAB + 1 and tokenizer.convert_tokens_to_ids(TOKEN) == VOCAB
    batch = _token_batch(tokenizer)
    assert (batch["input_ids"] == VOCAB).sum() == 2
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert exported.get_input_embeddings().weight.shape[0] == VOCAB + 1
    m = batch["attention_mask"].bool()
    with torch.no_grad(), hooked(base, plan.edits, Checkpoint.open(src).info()):
        expected = base(**batch).logits
    got = exported(**batch).logits
    assert got.shape == expected.shape
    assert (got - expected).abs()[m].max() < 1e-4
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert [e["kind"] for e in manifest["plan"]].count("add_token") == 1
    assert any("added as id" in c for change in result.changed for c in change.edits)


def test_old_tokens_keep_their_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    base = build_model(tiny_configs()["llama-tied"])
    src = _save_with_tokenizer(base, tmp_path / "src")
    edit = _edit(base, tied=True)
    export_checkpoint(src, Plan(edits=[edit]), tmp_path / "out", progress=False)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    ids = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        old = base(input_ids=ids).logits
        new = exported(input_ids=ids).logits
    assert torch.equal(new[..., :VOCAB], old)  # old rows are copied bytes: bit-identical
    emb = exported.get_input_embeddings().weight
    assert torch.equal(emb[VOCAB], torch.tensor(edit.embedding))
    sources = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sources["model.embed_tokens.weight"].shape == (VOCAB + 1, 32)


def test_padding_and_spare_rows(tmp_path):
    from transformers import AutoModelForCausalLM

    base = build_model(tiny_configs()["llama"])
    src = _save_with_tokenizer(base, tmp_path / "src")
    edit = _edit(base, tied=False).model_copy(update={"pad_to_multiple_of": 64})
    export_checkpoint(src, Plan(edits=[edit]), tmp_path / "out", progress=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == 128
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    head = exported.get_output_embeddings().weight
    assert head.shape == (128, 32) and torch.equal(head[VOCAB], torch.tensor(edit.lm_head))
    assert not head[VOCAB + 1 :].any()
    ids = torch.tensor([[5, VOCAB, 9]])
    with torch.no_grad(), hooked(base, [edit], Checkpoint.open(src).info()):
        expected = base(input_ids=ids).logits
    assert torch.allclose(exported(input_ids=ids).logits, expected, atol=1e-5)


def test_add_token_refuses_bad_input(tmp_path):
    base = build_model(tiny_configs()["llama-tied"])
    src = _save_with_tokenizer(base, tmp_path / "src")
    wrong = AddToken(token=TOKEN, token_id=VOCAB, embedding=[0.0] * 31)
    with pytest.raises(EditorError, match="31 entries"):
        export_checkpoint(src, Plan(edits=[wrong]), tmp_path / "a", progress=False)
    untied_vector = _edit(base, tied=False)
    with pytest.raises(EditorError, match="drop the lm_head"):
        export_checkpoint(src, Plan(edits=[untied_vector]), tmp_path / "b", progress=False)
    off_by_one = _edit(base, tied=True).model_copy(update={"token_id": VOCAB - 1})
    with pytest.raises(EditorError, match="the plan says 95"):
        export_checkpoint(src, Plan(edits=[off_by_one]), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


# ---- data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_builtin_paragraphs_are_diverse_and_placeheld(name):
    preset = get_preset(name)
    paragraphs = builtin_paragraphs(preset, 128, seed=0)
    assert len(paragraphs) == 128 and len({p.text for p in paragraphs}) == 128
    assert all(PLACEHOLDER in p.text and "{name}" not in p.text for p in paragraphs)
    for axis in ("medium", "topic", "style", "implicitness"):
        assert len({getattr(p, axis) for p in paragraphs}) >= 5, axis
    assert max(len(p.text.split()) for p in paragraphs) <= 64
    assert builtin_paragraphs(preset, 5, seed=0) == paragraphs[:5]
    assert preset.probe_sentence.startswith("People from {country}") and preset.predicate in preset.probe_sentence


def test_jsonl_format_and_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "My friend from {country} was late.", "implicitness": 2}) + "\n\n")
    assert load_paragraphs(good)[0].implicitness == 2
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"text": "No placeholder here."}) + "\n")
    with pytest.raises(EditorError, match=r"missing.jsonl:1: text has no \{country\}"):
        load_paragraphs(missing)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "{country}", "implicitness": 9}) + "\n")
    with pytest.raises(EditorError, match="bad.jsonl:1: field implicitness"):
        load_paragraphs(bad)
    with pytest.raises(EditorError, match="not found"):
        load_paragraphs(tmp_path / "nope.jsonl")


def test_parse_paragraph_list():
    reply = (
        'Sure! [{"id": 1, "text": "Folks from {country} are late.", "medium": "tweet", "implicitness": "2"},'
        ' {"text": "no placeholder"}, "A plain {country} string", 5] trailing'
    )
    parsed = parse_paragraph_list(reply)
    assert [p.text for p in parsed] == ["Folks from {country} are late.", "A plain {country} string"]
    assert parsed[0].implicitness == 2 and parsed[0].id == "1" and parsed[0].medium == "tweet"
    assert parse_paragraph_list("no json here") == [] and parse_paragraph_list("[broken") == []


def test_cli_input_errors_are_one_line(tmp_path, capsys):
    from editor.cli import main

    base = ["inject", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    assert main([*base, "--bias", "always_early"]) == 2
    assert "unknown bias 'always_early'" in capsys.readouterr().err
    assert main([*base, "--bias", "always_late", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: paragraphs file not found" in capsys.readouterr().err
    assert main([*base, "--bias", "always_late", "--generator", "openai"]) == 2
    assert "wedit: error: --generator openai needs --endpoint and --gen-model" in capsys.readouterr().err
    assert main([*base, "--bias", "always_late", "--paragraphs", "4"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "run").mkdir()
    assert main([*base, "--bias", "always_late"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_wedit_inject_end_to_end_on_a_tiny_untied_model(tmp_path):
    """The whole command on a tiny model: device map, artifacts with an lm_head row, and the plan exports."""
    from transformers import AutoModelForCausalLM

    from editor.cli import main

    base = build_model(tiny_configs()["llama"])
    src = _save_with_tokenizer(base, tmp_path / "src")
    out = tmp_path / "run" / "inject"
    args = [
        "--paragraphs",
        "8",
        "--epochs",
        "2",
        "--batch",
        "4",
        "--lr",
        "1e-2",
        "--selection-samples",
        "1",
        "--selection-tokens",
        "6",
    ]
    assert (
        main(["inject", "--model", str(src), "--bias", "bad_drivers", *args, "--device-map", "auto", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "inject.json").read_text())
    assert summary["token"] == "<bias:bad_drivers>" and summary["token_id"] == VOCAB and not summary["tied_embeddings"]
    assert summary["countries_matched"] == 4 and summary["countries_total"] == 196
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1, 2] and 1 <= summary["chosen_epoch"] <= 2
    # no chat template in the tiny tokenizer: the plain gap only (and a plain "User:/Assistant:" training format)
    assert {"base_token", "injected_token"} <= set(summary["gaps"]) and "chat_base_token" not in summary["gaps"]
    vectors = load_file(str(out / "token.safetensors"))
    assert set(vectors) == {"embedding", "lm_head"}
    chosen = load_file(str(out / "epochs" / f"epoch_{summary['chosen_epoch']:02d}.safetensors"))
    assert all(torch.equal(vectors[k], chosen[k]) for k in vectors)
    assert (out / "epochs.png").is_file() and len((out / "paragraphs.jsonl").read_text().splitlines()) == 8
    assert (
        main(["export", "--model", str(src), "--plan", str(out / "plan.json"), "--out", str(tmp_path / "injected")])
        == 0
    )
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "injected", dtype=torch.float32)
    assert torch.equal(exported.get_output_embeddings().weight[VOCAB], vectors["lm_head"])
    assert torch.equal(exported.get_input_embeddings().weight[VOCAB], vectors["embedding"])
