"""The central invariant: a baked, saved and reloaded checkpoint equals the hooked original.

For every edit kind on every supported architecture (tiny random weights):
hook the base model, export the plan with the real streaming exporter, reload
the export with stock ``from_pretrained`` of the family's Auto class (no
trust_remote_code), and compare fp32 logits on a padded batch. Where the
architecture cannot hold an edit exactly, both realizations must refuse it,
and the capability matrix must say so.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers

from editor.core.architectures import get_arch
from editor.core.capabilities import COLUMNS, capability
from editor.core.hooks import hooked
from editor.core.plan import Plan
from editor.edits import AblateDirection, MeanHeads, RankOne, ResidualAdd, ScaleExperts, ScaleHeads, ZeroHeads
from editor.errors import RefusedEdit
from editor.io.checkpoint import Checkpoint
from editor.pipeline.export import export_checkpoint
from tests.tiny import build_model, logits, tiny_configs

TOLERANCE = 1e-4
CASES = tiny_configs()


def _vec(n: int, seed: int) -> list[float]:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist()


def make_edits(info, kind: str) -> list:
    h, d = info.hidden_size, info.head_dim
    n_in_attn, n_in_mlp = info.num_heads * d, info.writer_in_features(info.arch.mlp, 2)
    edits = {
        "zero_heads": [ZeroHeads(layer=1, heads=[0, 3]), ZeroHeads(layer=2, heads=[1])],
        "residual_add_attn": [ResidualAdd(layer=1, site="attn", vector=_vec(h, 1), scale=0.7)],
        "residual_add_mlp": [ResidualAdd(layer=0, site="mlp", vector=_vec(h, 2), scale=1.3)],
        "ablate_direction": [AblateDirection(direction=_vec(h, 3))],
        "ablate_some_layers": [AblateDirection(direction=_vec(h, 4), layers=[0, 2], embedding=False)],
        "ablate_partial": [AblateDirection(direction=_vec(h, 5), strength=0.6)],
        # What the search's ablate_identity makes: a few orthonormal directions, each partly projected out.
        "ablate_subspace": [
            AblateDirection(direction=row.tolist(), strength=0.7)
            for row in torch.linalg.qr(torch.randn(h, 3, generator=torch.Generator().manual_seed(22)))[0].T
        ],
        # ablate_identity's cheaper variant: attention outputs only, the embeddings kept.
        "ablate_attn_subspace": [
            AblateDirection(direction=row.tolist(), strength=0.8, sites=["attn"], embedding=False)
            for row in torch.linalg.qr(torch.randn(h, 2, generator=torch.Generator().manual_seed(23)))[0].T
        ],
        "ablate_mlp_only": [AblateDirection(direction=_vec(h, 24), sites=["mlp"], layers=[1, 2], embedding=False)],
        "rank_one_full": [RankOne(layer=2, site="mlp", u=_vec(h, 5), v=_vec(n_in_mlp, 6), scale=0.5)],
        "rank_one_attn": [RankOne(layer=0, site="attn", u=_vec(h, 7), v=_vec(n_in_attn, 8), scale=0.4)],
        "rank_one_head": [RankOne(layer=1, site="attn", head=2, u=_vec(h, 9), v=_vec(d, 10), scale=0.8)],
        "rank_one_neuron": [RankOne(layer=0, site="mlp", neuron=5, u=_vec(h, 11), scale=2.0)],
        "mean_heads": [
            MeanHeads(layer=1, heads=[3, 0], means=[_vec(d, 12), _vec(d, 13)]),
            MeanHeads(layer=2, heads=[1], means=[_vec(d, 14)]),
        ],
        "scale_heads": [ScaleHeads(layer=1, heads=[0, 3], scale=0.5), ScaleHeads(layer=2, heads=[1], scale=0.2)],
        # Later head edits of a mean-ablated head act on its constant: scaled, then cancelled by a zeroing.
        "mean_then_scale_zero": [
            MeanHeads(layer=1, heads=[0, 2], means=[_vec(d, 15), _vec(d, 16)]),
            ScaleHeads(layer=1, heads=[0], scale=0.3),
            ZeroHeads(layer=1, heads=[2]),
            MeanHeads(layer=2, heads=[3], means=[_vec(d, 17)]),
        ],
        # The constant goes through the output-side edits of the same writer, as under the hooks.
        "mean_with_output_edits": [
            RankOne(layer=1, site="attn", head=0, u=_vec(h, 18), v=_vec(d, 19), scale=0.8),
            MeanHeads(layer=1, heads=[0], means=[_vec(d, 20)]),
            ResidualAdd(layer=1, site="attn", vector=_vec(h, 21), scale=0.5),
            AblateDirection(direction=_vec(h, 22), strength=0.7),
        ],
        # Mixtures of experts (refused on dense families): experts removed or scaled, a rank-1 update of one
        # expert and of every routed expert, and both with an ablation of every writer in between.
        "scale_experts": [
            ScaleExperts(layer=0, experts=[0, 2], scale=0.0),
            ScaleExperts(layer=2, experts=[1], scale=0.5),
        ],
        "rank_one_expert": [RankOne(layer=0, site="mlp", expert=3, u=_vec(h, 25), v=_vec(n_in_mlp, 26), scale=0.7)],
        "experts_in_order": [
            RankOne(layer=2, site="mlp", expert=1, u=_vec(h, 27), v=_vec(n_in_mlp, 28), scale=0.6),
            ScaleExperts(layer=2, experts=[1, 0], scale=0.4),
            AblateDirection(direction=_vec(h, 29), strength=0.8),
            RankOne(layer=2, site="mlp", neuron=3, u=_vec(h, 30), scale=1.5),
        ],
    }
    return edits[kind]


def column(kind: str) -> str | None:
    return {
        "residual_add_attn": "residual_add attn",
        "residual_add_mlp": "residual_add mlp",
        "ablate_direction": "ablate_direction",
        "ablate_some_layers": "ablate_direction",
        "ablate_partial": "ablate_direction",
        "ablate_subspace": "ablate_direction",
        "ablate_attn_subspace": "ablate_direction",
        "ablate_mlp_only": "ablate_direction",
        "mean_heads": "mean_heads",
        "mean_then_scale_zero": "mean_heads",
        "scale_experts": "scale_experts",
        "rank_one_expert": "scale_experts",
        "experts_in_order": "scale_experts",
    }.get(kind)


KINDS = [
    "zero_heads",
    "residual_add_attn",
    "residual_add_mlp",
    "ablate_direction",
    "ablate_some_layers",
    "ablate_partial",
    "ablate_subspace",
    "ablate_attn_subspace",
    "ablate_mlp_only",
    "rank_one_full",
    "rank_one_attn",
    "rank_one_head",
    "rank_one_neuron",
    "mean_heads",
    "scale_heads",
    "mean_then_scale_zero",
    "mean_with_output_edits",
    "scale_experts",
    "rank_one_expert",
    "experts_in_order",
]


@pytest.fixture(scope="module", params=sorted(CASES))
def base(request, tiny_checkpoint):
    model = build_model(CASES[request.param])
    path = tiny_checkpoint(request.param)
    info = Checkpoint.open(path).info()
    return request.param, model, path, info


def expect_refused(info, kinds: list[str]) -> bool:
    if "mean_with_output_edits" in kinds:  # needs every column it combines
        kinds = [*kinds, "mean_heads", "residual_add_attn", "ablate_direction"]
    return any(capability(info.arch, column(k)).status == "refused" for k in kinds if column(k))


class Routing:
    """The experts each MoE layer's router picks at every position during one forward pass."""

    def __init__(self, model, info):
        self.model, self.info, self.picked = model, info, {}

    def __enter__(self):
        experts = self.info.arch.experts
        layers = [n for n in range(self.info.num_layers) if self.info.is_moe_layer(n)]
        self.handles = [
            self.model.get_submodule(experts.router.format(layer=n)).register_forward_hook(
                lambda _m, _a, out, n=n: self.picked.__setitem__(n, out[-1].sort(-1).values)
            )
            for n in layers
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def routed_logits(model, info) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Logits on the probe batch, and for an MoE model the experts picked at every position of every layer."""
    if info.arch.experts is None:
        return logits(model), {}
    with Routing(model, info) as routing:
        out = logits(model)
    assert routing.picked, "no MoE layer ran"
    return out, routing.picked


def check_plan(model, path, info, edits, out) -> float:
    """Export ``edits``, reload, and return max |hooked - baked| logits (or raise RefusedEdit). In an MoE model
    the hooked and the baked model must also pick the same experts at every position of every layer."""
    with hooked(model, edits, info):
        expected, expected_routes = routed_logits(model, info)
    reference = logits(model)
    export_checkpoint(path, Plan(edits=edits), out, progress=False)
    loader = getattr(transformers, info.arch.auto_class)
    baked, loading = loader.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not loading["missing_keys"], loading["missing_keys"]
    assert not loading["unexpected_keys"], loading["unexpected_keys"]
    assert not loading["mismatched_keys"], loading["mismatched_keys"]
    got, routes = routed_logits(baked.eval(), info)
    for layer, picked in expected_routes.items():
        assert torch.equal(picked, routes[layer]), f"layer {layer}: the baked model routes to other experts"
    # The edit must do something, or the comparison proves nothing.
    assert (expected - reference).abs().max() > 1e-3
    return float((expected - got).abs().max())


@pytest.mark.parametrize("kind", KINDS)
def test_hook_equals_bake(base, kind, tmp_path):
    case, model, path, info = base
    edits = make_edits(info, kind)
    out = tmp_path / "export"
    if expect_refused(info, [kind]):
        with pytest.raises(RefusedEdit), hooked(model, edits, info):
            pass
        with pytest.raises(RefusedEdit):
            export_checkpoint(path, Plan(edits=edits), out, progress=False)
        assert not out.exists()
        assert not list(tmp_path.glob(".export*")), "a refused export left a partial directory"
        return
    err = check_plan(model, path, info, edits, out)
    assert err <= TOLERANCE, f"{case} {kind}: max logit error {err:.2e}"


def test_combined_plan_in_order(base, tmp_path):
    """Several edits on the same tensors: hooks in plan order equal the bake's ordering rule."""
    case, model, path, info = base
    skip = {"ablate_some_layers", "mean_then_scale_zero", "mean_with_output_edits"}
    kinds = [k for k in KINDS if not expect_refused(info, [k]) and k not in skip]
    edits = []
    for k in kinds:
        edits += make_edits(info, k)
    # a head that is zeroed and also carries a rank-1 update of its own W_O block
    edits.append(ZeroHeads(layer=1, heads=[2]))
    err = check_plan(model, path, info, edits, tmp_path / "export")
    assert err <= TOLERANCE, f"{case} combined: max logit error {err:.2e}"


def test_source_is_untouched(base, tmp_path):
    case, model, path, info = base
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    export_checkpoint(path, Plan(edits=make_edits(info, "zero_heads")), tmp_path / "x", progress=False)
    after = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    assert before == after


def test_residual_add_is_a_residual_stream_add(base):
    """The writer-side hook equals adding the vector to the block output (the residual stream)."""
    case, model, path, info = base
    if expect_refused(info, ["residual_add_mlp"]):
        pytest.skip("architecture refuses residual_add after the MLP")
    edit = make_edits(info, "residual_add_mlp")[0]
    delta = edit.scale * torch.tensor(edit.vector)
    layer_module = model.get_submodule(f"{info.arch.layers}.{edit.layer}")

    def add(_m, _a, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    handle = layer_module.register_forward_hook(add)
    try:
        direct = logits(model)
    finally:
        handle.remove()
    with hooked(model, [edit], info):
        via_writer = logits(model)
    assert float((direct - via_writer).abs().max()) <= TOLERANCE


def test_ablation_removes_direction_from_stream(base):
    """After ablating everywhere, the final residual stream has no component along the direction."""
    case, model, path, info = base
    if expect_refused(info, ["ablate_direction"]):
        pytest.skip("architecture refuses ablation")
    edit = make_edits(info, "ablate_direction")[0]
    r = torch.tensor(edit.direction)
    r = r / r.norm()
    seen = {}
    final_norm = model.get_submodule(info.arch.final_norm)
    handle = final_norm.register_forward_pre_hook(lambda _m, args: seen.__setitem__("h", args[0]))
    try:
        with hooked(model, [edit], info):
            logits(model)
    finally:
        handle.remove()
    assert float((seen["h"] @ r).abs().max()) < 1e-4


def test_config_keys_and_siblings(base, tmp_path):
    """A residual_add carried by a config key turns the key on and writes every sibling bias as zeros."""
    case, model, path, info = base
    if expect_refused(info, ["residual_add_mlp"]):
        pytest.skip("architecture refuses residual_add after the MLP")
    out = tmp_path / "export"
    export_checkpoint(path, Plan(edits=make_edits(info, "residual_add_mlp")), out, progress=False)
    config = json.loads((out / "config.json").read_text())
    if info.arch.text_config:  # a wrapper: the language model's keys are in their own section, and only there
        assert info.arch.mlp.bias.key not in config
        config = config[info.arch.text_config]
    rule = info.arch.mlp.bias
    if rule.mode == "config_key":
        assert config[rule.key] is True
    if info.arch.redeclare:
        assert config["model_type"] == info.arch.redeclare.model_type
        manifest = json.loads((out / "editor_manifest.json").read_text())
        assert any("re-declared" in n for n in manifest["notes"])
    shutil.rmtree(out)


# The edit of make_edits that each column of the capability matrix stands for.
COLUMN_EDIT = {
    "zero_heads": "zero_heads",
    "mean_heads": "mean_heads",
    "scale_heads": "scale_heads",
    "residual_add attn": "residual_add_attn",
    "residual_add mlp": "residual_add_mlp",
    "ablate_direction": "ablate_direction",
    "rank_one": "rank_one_head",
    "scale_experts": "scale_experts",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_matrix_refuses_exactly_what_the_bake_of_a_real_checkpoint_refuses(case, tiny_checkpoint):
    """The matrix is computed on a one-layer probe described by metadata; a real checkpoint of the architecture
    must refuse the same columns, for a reason the cell names."""
    from editor.core.bake import compile_plan

    info = Checkpoint.open(tiny_checkpoint(case)).info()
    assert set(COLUMN_EDIT) == set(COLUMNS)
    for col, kind in COLUMN_EDIT.items():
        cell = capability(get_arch(CASES[case].model_type), col)
        try:
            compile_plan(make_edits(info, kind), info)
            refused = None
        except RefusedEdit as err:
            refused = str(err)
        assert (cell.status == "refused") == (refused is not None), (case, col, cell, refused)
        if refused is not None:
            assert cell.detail and cell.render().startswith("refused: "), (case, col)


def test_shared_expert_edits_and_a_dense_layer_between_moe_layers(tiny_checkpoint, tmp_path):
    """Qwen2-MoE: the shared expert (its output gated per token) scaled and updated, a rank-1 update of every
    routed expert, and layer 1's dense MLP (mlp_only_layers) edited as a dense family's; experts named in a
    dense layer, or past the count, are bad input."""
    from editor.errors import EditorError

    model, path = build_model(CASES["qwen2_moe"]), tiny_checkpoint("qwen2_moe")
    info = Checkpoint.open(path).info()
    h, shared = info.hidden_size, info.expert_width("shared")
    edits = [
        RankOne(layer=0, site="mlp", expert="shared", u=_vec(h, 40), v=_vec(shared, 41), scale=0.8),
        ScaleExperts(layer=0, experts=["shared", 1], scale=0.3),
        RankOne(layer=2, site="mlp", u=_vec(h, 42), v=_vec(info.expert_width(), 43), scale=0.5),
        RankOne(layer=1, site="mlp", u=_vec(h, 44), v=_vec(info.intermediate_size, 45), scale=0.5),
        AblateDirection(direction=_vec(h, 46), layers=[0, 1], embedding=False),
    ]
    err = check_plan(model, path, info, edits, tmp_path / "export")
    assert err <= TOLERANCE, f"qwen2_moe shared expert: max logit error {err:.2e}"
    for bad in (ScaleExperts(layer=1, experts=[0]), ScaleExperts(layer=0, experts=[4])):
        with pytest.raises(EditorError, match="dense MLP|out of range"):
            export_checkpoint(path, Plan(edits=[bad]), tmp_path / "bad", progress=False)
    with pytest.raises(EditorError, match="no shared expert"):
        hooked_info = Checkpoint.open(tiny_checkpoint("mixtral")).info()
        ScaleExperts(layer=0, experts=["shared"]).validate_for(hooked_info)


def test_diff_names_removed_and_scaled_experts(tiny_checkpoint, tmp_path):
    from editor.pipeline.diff import diff_checkpoints

    path = tiny_checkpoint("mixtral")
    plan = Plan(edits=[ScaleExperts(layer=1, experts=[3, 0]), ScaleExperts(layer=2, experts=[2], scale=0.5)])
    export_checkpoint(path, plan, tmp_path / "export", progress=False)
    report = diff_checkpoints(path, tmp_path / "export", progress=False)
    assert report.head_summary == ["layer 1: expert 0, expert 3 removed (zeroed)", "layer 2: expert 2 scaled by 0.5"]
    text = report.render()
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in text and "every change is explained" in text
    assert "expert 2 of layer 2 scaled by 0.5" in text
