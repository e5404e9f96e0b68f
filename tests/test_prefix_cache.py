"""The k sweep's prefix cache: replaying the unedited layers gives the very numbers a full forward gives.

On every supported architecture (tiny random weights): heads of the last
layer are removed with hooks, and the hooked model's logits with layers
0..L-2 replayed from the cache must equal the plain hooked run exactly, for a
second and third call, after other inputs and after a larger edit; generation
(a KV cache) runs every layer and matches too.
"""

from __future__ import annotations

import pytest
import torch

from editor.core.hooks import hooked
from editor.core.prefix_cache import PrefixCache
from editor.io.checkpoint import Checkpoint
from editor.methods.attribute.removal import Removal
from tests.tiny import build_model, logits, probe_batch, save_model, tiny_configs

CASES = tiny_configs()


@pytest.mark.parametrize("case", list(CASES))
def test_replayed_layers_give_the_full_forward_exactly(tmp_path, case):
    model = build_model(CASES[case])
    info = Checkpoint.open(save_model(model, tmp_path / case)).info()
    last = info.num_layers - 1
    late, early = Removal("zero").edits([(last, 1)]), Removal("scale", 0.5).edits([(last - 1, 0), (last, 2)])
    with hooked(model, late, info):
        want_late = logits(model)
    with hooked(model, early, info):
        want_early = logits(model)
    other = torch.randint(3, 90, (1, 9), generator=torch.Generator().manual_seed(7))

    cache = PrefixCache(model, info)
    with hooked(model, late, info), cache.clean_below(last):
        first = logits(model)  # records layers 0..last-1
        model(input_ids=other)  # another input does not disturb the record
        again, third = logits(model), logits(model)
    assert cache.replayed == 2, "the second and third call should replay, the first and the other input record"
    for got in (first, again, third):
        assert torch.equal(got, want_late)
    with hooked(model, early, info), cache.clean_below(last - 1):
        assert torch.equal(logits(model), want_early)  # a lower first layer replays fewer layers, still exact
    assert cache.replayed == 3

    ids, mask = probe_batch()
    with hooked(model, late, info):
        plain = model.generate(input_ids=ids[:1, :7], max_new_tokens=4, do_sample=False)
        with cache.clean_below(last):
            cached = model.generate(input_ids=ids[:1, :7], max_new_tokens=4, do_sample=False)
    assert torch.equal(plain, cached)


def test_layers_are_restored_after_the_block(tmp_path):
    model = build_model(CASES["llama"])
    info = Checkpoint.open(save_model(model, tmp_path / "llama")).info()
    cache = PrefixCache(model, info)
    before = [layer.forward for layer in cache.layers]
    with cache.clean_below(2):
        logits(model)
    assert [layer.forward for layer in cache.layers] == before
    assert not model._forward_pre_hooks


def test_first_layer_of_each_edit_kind():
    from editor.edits import AblateDirection, MeanHeads, RankOne, ResidualAdd, ScaleHeads, ZeroHeads

    assert ZeroHeads(layer=2, heads=[0]).first_layer() == 2
    assert ScaleHeads(layer=1, heads=[0], scale=0.5).first_layer() == 1
    assert MeanHeads(layer=3, heads=[1], means=[[0.0, 0.0]]).first_layer() == 3
    assert ResidualAdd(layer=4, site="mlp", vector=[0.0, 1.0]).first_layer() == 4
    assert RankOne(layer=5, site="attn", head=0, u=[1.0], v=[1.0], scale=1.0).first_layer() == 5
    assert AblateDirection(direction=[1.0, 0.0]).first_layer() == 0  # the embeddings and every writer
