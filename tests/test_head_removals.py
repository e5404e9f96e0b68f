"""Head removals (mean_heads, scale_heads) on tiny models: plan checks, diff recognition, card wording, the choice rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from editor.core.bake import compile_plan
from editor.core.hooks import hooked
from editor.core.plan import Plan, parse_plan
from editor.edits import MeanHeads, ScaleHeads, ZeroHeads
from editor.errors import EditorError, RefusedEdit
from editor.io.checkpoint import Checkpoint
from editor.methods.attribute.removal import KPoint, Removal, choose_point, head_means, removals_for, saturation_k
from editor.pipeline.card import render_card
from editor.pipeline.diff import diff_checkpoints
from editor.pipeline.export import export_checkpoint
from tests.tiny import build_model, logits, tiny_configs


@pytest.fixture(scope="module")
def llama(tiny_checkpoint) -> tuple[torch.nn.Module, Path]:
    return build_model(tiny_configs()["llama"]), tiny_checkpoint("llama")


def _vec(n: int, seed: int) -> list[float]:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist()


def test_plan_fields_are_checked(llama):
    _, base = llama
    info = Checkpoint.open(base).info()  # hidden 32, 4 heads of 8
    with pytest.raises(EditorError, match="means has 1 vectors for 2 heads"):
        parse_plan([{"kind": "mean_heads", "layer": 0, "heads": [0, 1], "means": [[0.0] * 8]}])
    with pytest.raises(EditorError, match="scale"):
        parse_plan([{"kind": "scale_heads", "layer": 0, "heads": [0], "scale": 1.5}])
    with pytest.raises(EditorError, match="head_dim is 8"):
        MeanHeads(layer=0, heads=[0], means=[[0.0] * 7]).validate_for(info)
    with pytest.raises(EditorError, match="non-finite"):
        MeanHeads(layer=0, heads=[0], means=[[float("nan")] * 8]).validate_for(info)
    with pytest.raises(EditorError, match="lists a head twice"):
        ScaleHeads(layer=0, heads=[1, 1], scale=0.5).validate_for(info)
    with pytest.raises(EditorError, match="out of range"):
        ScaleHeads(layer=0, heads=[4], scale=0.5).validate_for(info)


def test_mean_heads_refusal_names_the_reason():
    """Phi-3's o_proj cannot carry a bias: the hook and the bake refuse alike, with the reason."""
    from editor.core.architectures import get_arch
    from editor.core.capabilities import probe_info

    info = probe_info(get_arch("phi3"))
    edit = MeanHeads(layer=0, heads=[0], means=[[0.0] * info.head_dim])
    with pytest.raises(RefusedEdit, match="o_proj cannot carry a bias"):
        compile_plan([edit], info)
    # scale_heads needs no bias and compiles
    assert compile_plan([ScaleHeads(layer=0, heads=[0], scale=0.5)], info).touched


def test_mean_ablation_of_the_true_mean_keeps_the_average_output(llama):
    """With the heads' own means, the o_proj output averaged over the text is unchanged (zeroing moves it)."""
    model, base = llama
    info = Checkpoint.open(base).info()
    tokens = torch.randint(3, 96, (40,), generator=torch.Generator().manual_seed(3))
    means = head_means(model, info, tokens, window=20)
    seen: dict[str, torch.Tensor] = {}
    o_proj = model.get_submodule("model.layers.1.self_attn.o_proj")
    handle = o_proj.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out[0, 1:].mean(0)))
    try:
        outputs = {}
        for name, removal in (("none", None), ("mean", Removal("mean")), ("zero", Removal("zero"))):
            edits = removal.edits([(1, 0), (1, 2)], means) if removal else []
            with hooked(model, edits, info), torch.no_grad():
                for start in (0, 20):
                    model(input_ids=tokens[start : start + 20].unsqueeze(0))
                    outputs[(name, start)] = seen["out"].clone()
    finally:
        handle.remove()
    average = {name: (outputs[(name, 0)] + outputs[(name, 20)]) / 2 for name in ("none", "mean", "zero")}
    assert float((average["mean"] - average["none"]).abs().max()) < 1e-5
    assert float((average["zero"] - average["none"]).abs().max()) > 1e-2


def test_diff_names_mean_ablated_scaled_and_zeroed_heads(llama, tmp_path):
    model, base = llama
    info = Checkpoint.open(base).info()
    edits = [
        MeanHeads(layer=1, heads=[2], means=[_vec(info.head_dim, 1)]),
        ScaleHeads(layer=2, heads=[0, 3], scale=0.5),
        ZeroHeads(layer=0, heads=[1]),
    ]
    out = tmp_path / "out"
    export_checkpoint(base, Plan(edits=edits), out, progress=False)
    report = diff_checkpoints(base, out, progress=False)
    assert report.head_summary == [
        "layer 0: head 1 zeroed",
        "layer 1: head 2 mean-ablated",
        "layer 2: heads 0, 3 scaled by 0.5",
    ]
    assert report.unexplained == []
    text = report.render()
    assert "head 0 scaled by 0.5, head 3 scaled by 0.5" in text
    card = (out / "README.md").read_text()
    assert "layer 1: attention head 2 mean-ablated" in card and "layer 2: attention heads 0, 3 scaled by 0.5" in card
    assert "mean-ablated heads, scaled heads" in card and "average output over ordinary text" in card
    # The mean constant lives in the bias: the export still matches the hooks.
    from transformers import AutoModelForCausalLM

    with hooked(model, edits, info):
        expected = logits(model)
    baked = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert float((logits(baked) - expected).abs().max()) < 1e-4


def test_diff_tells_a_bias_change_outside_the_heads_span_from_a_mean(llama, tmp_path):
    """A zeroed head plus an unrelated attention bias add is not a mean-ablation."""
    from editor.edits import ResidualAdd

    _, base = llama
    out = tmp_path / "out"
    edits = [ZeroHeads(layer=1, heads=[2]), ResidualAdd(layer=1, site="attn", vector=_vec(32, 5))]
    export_checkpoint(base, Plan(edits=edits), out, progress=False)
    assert diff_checkpoints(base, out, progress=False).head_summary == ["layer 1: head 2 zeroed"]


def _point(label: str, k: int, gap: float, ppl: float | None, heads: int = 2) -> KPoint:
    kind = label.split()[0] if label.startswith("scaled") else {"zeroed": "zero", "mean-ablated": "mean"}[label]
    return KPoint(label, kind, 0.5 if kind == "scaled" else 0.0, k, [(0, i) for i in range(heads)], gap, ppl)


def test_choice_rule_inside_budget_closest_to_zero():
    points = [
        _point("zeroed", 1, 0.40, 10.2),  # inside, small gain
        _point("zeroed", 5, 0.10, 10.4),  # inside: best of the zeroed
        _point("zeroed", 20, -0.30, 14.0),  # over the budget: never chosen however low the gap
        _point("mean-ablated", 5, -0.05, 10.45),  # inside, closest to zero: chosen
        _point("scaled by 0.5", 20, 0.0, None),  # damage not measured: never chosen
        _point("mean-ablated", 30, 0.02, 10.6),  # +6%: over
    ]
    choice = choose_point(points, baseline_gap=0.5, base_perplexity=10.0, budget=0.05)
    assert choice.point is points[3]
    assert [p.k for p in choice.eligible] == [1, 5, 5]
    # a reversal further from zero than a partial removal loses to it
    assert choose_point(points[:3] + [_point("mean-ablated", 6, -0.2, 10.1)], 0.5, 10.0, 0.05).point is points[1]
    # a gain under 5% of the baseline is noise
    assert choose_point([_point("zeroed", 1, 0.48, 10.0)], 0.5, 10.0, 0.05).point is None
    # past the mirror image of the baseline is a larger bias the other way: not eligible
    assert choose_point([_point("zeroed", 4, -0.6, 10.0)], 0.5, 10.0, 0.05).point is None
    # no stereotype on the held-out questions (baseline <= 0): pushing the gap further down is not a removal
    assert choose_point([_point("zeroed", 2, -0.06, 10.0)], -0.038, 10.0, 0.05).point is None
    # ties: lower perplexity, then fewer heads
    tie = [_point("zeroed", 3, 0.1, 10.3, heads=3), _point("zeroed", 2, 0.1, 10.3, heads=2)]
    assert choose_point(tie, 0.5, 10.0, 0.05).point is tie[1]


def test_saturation_k_and_removals():
    assert saturation_k([1, 2, 3, 4], [0.9, 0.5, 0.12, 0.1], baseline=1.0) == 3
    assert saturation_k([1, 2], [1.2, 1.1], baseline=1.0) == 1
    assert [r.label for r in removals_for(["zero", "scale", "mean"], [0.25, 0.5])] == [
        "zeroed",
        "scaled by 0.25",
        "scaled by 0.5",
        "mean-ablated",
    ]
    means = np.arange(3 * 4 * 8, dtype=np.float32).reshape(3, 4, 8)
    (edit,) = Removal("mean").edits([(1, 3), (1, 0)], means)
    assert edit.heads == [0, 3] and edit.means[1] == means[1, 3].tolist()
    assert [e.kind for e in Removal("scale", 0.5).edits([(0, 1), (2, 2)])] == ["scale_heads", "scale_heads"]


def test_card_reports_the_saturation_and_the_chosen_k():
    manifest = {
        "base_model": {"source": "builtin:x"},
        "plan": [{"kind": "scale_heads", "layer": 0, "heads": [1], "scale": 0.5}],
        "run": {
            "stages": {
                "attribute": {
                    "biases": [
                        {
                            "bias": "always_late",
                            "k": 4,
                            "removal": "scaled by 0.5",
                            "heads": 3,
                            "gap_before": 0.2,
                            "gap_after": 0.1,
                            "damage_budget": 0.05,
                            "perplexity_before": 25.0,
                            "perplexity_after": 26.0,
                            "kl_after": 0.01,
                            "saturation_k": 20,
                            "saturation_heads": 13,
                            "saturation_removal": "zeroed",
                            "saturation_gap": -0.2,
                            "saturation_perplexity": 35.0,
                            "saturation_kl": 0.3,
                        }
                    ]
                }
            }
        },
    }
    card = render_card(manifest)
    assert "k = 4 (3 heads scaled by 0.5)" in card
    assert "perplexity 25.00 → 26.00 (+4.0%)" in card
    assert "saturates at k = 20 (13 heads zeroed" in card and "+40.0%" in card
