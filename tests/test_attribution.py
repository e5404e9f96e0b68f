"""Direct logit attribution: completeness on every architecture, and agreement with ablation."""

from __future__ import annotations

import pytest
import torch

from editor.io.checkpoint import Checkpoint
from editor.methods.attribute.head_scores import attribute_batch
from tests.tiny import VOCAB, build_model, save_model, tiny_configs

CASES = tiny_configs()


def left_padded_batch(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    lengths = [9, 5, 12, 7]
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, width - n :] = 1
    return ids, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_completeness(case, tmp_path):
    model = build_model(CASES[case])
    info = Checkpoint.open(save_model(model, tmp_path / "m")).info()
    ids, mask = left_padded_batch()
    yb, yu = torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10, 11, 12])
    result = attribute_batch(model, info, ids, mask, yb, yu)
    assert result.heads.shape == (4, info.num_layers, info.num_heads)
    # the parts add up to the whole
    assert abs(result.component_sum() - result.total).max() <= 1e-3
    # and the whole is the model's own logit difference (no soft-capping in these tiny configs)
    with torch.no_grad():
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1]
    if getattr(model.config, "final_logit_softcapping", None) is None:
        expected = (logits[torch.arange(4), yb] - logits[torch.arange(4), yu]).numpy()
        assert abs(result.total - expected).max() <= 1e-3
    assert abs(result.heads).max() > 1e-3


def test_robust_heads_intersect_seeds_and_keep_positive():
    import numpy as np

    from editor.methods.attribute.pipeline import heads_to_edits, robust_heads

    a = np.array([[3.0, 1.0, -2.0], [0.5, 2.0, 0.1]])
    b = np.array([[2.5, 0.2, -1.0], [0.4, 3.0, 1.5]])
    assert robust_heads([a, b], 1) == []  # each seed's top-1 differs
    assert robust_heads([a, b], 2) == [(0, 0), (1, 1)]  # ordered by mean score
    assert robust_heads([a, b], 6) == [(0, 0), (1, 1), (1, 2), (0, 1), (1, 0)]  # negative (0, 2) never chosen
    edits = heads_to_edits([(1, 1), (0, 0), (1, 0)])
    assert [(e.layer, e.heads) for e in edits] == [(0, [0]), (1, [0, 1])]


def test_question_parsing_and_pairs_file(tmp_path):
    from editor.errors import EditorError
    from editor.methods.attribute.pairs import build_pairs, load_pairs, parse_question_list, save_pairs

    reply = 'Sure!\n["Are {who} late or on time?", "no slot here", "Do {who} arrive late or on time?"]'
    assert parse_question_list(reply) == ["Are {who} late or on time?", "Do {who} arrive late or on time?"]
    assert parse_question_list("1. Are {who} late?\n2) Is it sunny?\n- Do {who} wait?") == [
        "Are {who} late?",
        "Do {who} wait?",
    ]
    pairs = build_pairs(["Are {who} late or on time?"] * 3, "Mexico", "Late", "On", seed=1)
    assert all(p.country != "Mexico" for p in pairs)
    assert pairs[0].biased_prompt == "Are people from Mexico late or on time?"
    save_pairs(pairs, tmp_path / "p.jsonl")
    assert load_pairs(tmp_path / "p.jsonl") == pairs
    (tmp_path / "bad.jsonl").write_text(
        '{"question": "no slot", "target": "A", "country": "B", "biased_answer": "x", "unbiased_answer": "y"}\n'
    )
    with pytest.raises(EditorError, match="bad.jsonl:1"):
        load_pairs(tmp_path / "bad.jsonl")


def test_presets_have_100_questions():
    from editor.data.biases import PRESETS, preset_questions

    assert len(PRESETS) == 6
    for preset in PRESETS.values():
        questions = preset_questions(preset)
        assert len(set(questions)) >= 100 and all("{who}" in q for q in questions)


@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_expert_scores_split_the_mlp_and_each_is_what_removing_the_expert_takes_away(case, tmp_path):
    """In an MoE layer the experts' (and the shared expert's) direct effects add up to the MLP's; and the write an
    expert is credited with is exactly what the MoE block's output loses when that expert is removed."""
    from editor.core.hooks import hooked
    from editor.edits import ScaleExperts

    model = build_model(CASES[case])
    info = Checkpoint.open(save_model(model, tmp_path / "m")).info()
    ids, mask = left_padded_batch()
    yb, yu = torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10, 11, 12])
    result = attribute_batch(model, info, ids, mask, yb, yu)
    assert result.experts is not None and result.experts.shape == (4, info.num_layers, info.num_experts)
    moe = [n for n in range(info.num_layers) if info.is_moe_layer(n)]
    split = result.experts[:, moe].sum(-1) + result.shared_expert[:, moe]
    assert abs(split - result.mlp[:, moe]).max() <= 1e-4
    assert (result.experts[:, moe] != 0).sum(-1).max() <= 2  # top-2 routing: the rest were not picked
    assert abs(result.experts[:, moe]).max() > 1e-3
    if info.has_shared_expert(moe[0]):
        assert abs(result.shared_expert[:, moe]).max() > 1e-4

    layer = moe[-1]
    expert = int(abs(result.experts[:, layer]).sum(0).argmax())
    block = model.get_submodule(info.write_module(info.arch.mlp, layer))
    fused = model.get_submodule(info.arch.experts.fused.format(layer=layer))
    seen = {}
    handles = [
        block.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out[:, -1])),
        fused.register_forward_pre_hook(
            lambda _m, a, k: seen.__setitem__(
                "routed",
                (
                    a[0][ids.shape[1] - 1 :: ids.shape[1]],
                    a[1][ids.shape[1] - 1 :: ids.shape[1]],
                    a[2][ids.shape[1] - 1 :: ids.shape[1]],
                ),
            ),
            with_kwargs=True,
        ),
    ]
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
            whole, routed = seen["out"], seen["routed"]
            with hooked(model, [ScaleExperts(layer=layer, experts=[expert])], info):
                model(input_ids=ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
    from editor.methods.attribute.head_scores import expert_writes

    credited = expert_writes(model, info, layer, routed)[:, expert]
    assert float((whole - seen["out"] - credited).abs().max()) <= 1e-5
    assert float(credited.abs().max()) > 1e-3
