"""unlink_mlp's fit on the built-in SmolLM2: what it trains is what it bakes, and the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editor.core.hooks import hooked
from editor.data.seegull import load_seegull
from editor.data.splits import split_pairs
from editor.methods.search.gap_fit import FitLoop
from editor.methods.search.unlink import UnlinkFit, _LowRankUpdates, default_unlink_layers, fit_unlink


def test_a_short_fit_bakes_as_it_trained_and_leaves_the_model_as_it_was(smollm2):
    model, tokenizer, info = smollm2
    all_pairs = load_seegull()
    build = split_pairs(all_pairs)["build"]
    generic = torch.tensor(tokenizer("The river runs past the old mill and into the town. " * 20)["input_ids"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loop = FitLoop(steps=3, batch_pairs=4, window=32, learning_rate=1e-2, progress=False)
    fit = fit_unlink(model, info, tokenizer, all_pairs, build, generic, layers=[24, 20], rank=2, loop=loop)
    assert fit.layers == [20, 24] and len(fit.losses) == 3 and np.all(np.isfinite(fit.losses))
    assert fit.residual_side.shape == (2, 2, info.hidden_size)
    assert fit.neuron_side.shape == (2, 2, info.intermediate_size)
    # The residual side starts at zero: a fit that learned nothing would hand back an edit that does nothing.
    assert np.abs(fit.residual_side).max() > 1e-4
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and p.requires_grad, name
    # The hooks the fit trained with and the RankOne edits it hands to the bake agree.
    edits = fit.edits()
    assert [(e.layer, e.site, e.scale) for e in edits] == [(20, "mlp", 1.0)] * 2 + [(24, "mlp", 1.0)] * 2
    ids = torch.tensor([tokenizer("Swiss people are known to be")["input_ids"]])
    updates = _LowRankUpdates(model, info, fit.layers)
    updates.residual_side = [torch.from_numpy(u.T.copy()) for u in fit.residual_side]
    updates.neuron_side = [torch.from_numpy(v.T.copy()) for v in fit.neuron_side]
    with torch.no_grad():
        with updates:
            trained = model(input_ids=ids).logits
        with hooked(model, edits, info):
            baked = model(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(trained, baked, atol=1e-4, rtol=1e-4)
    assert (trained - plain).abs().max() > 1e-4
    # A trial's scale multiplies every piece; the same seed rebuilds the same fit.
    assert {e.scale for e in fit.edits(0.5)} == {0.5}
    again = fit_unlink(model, info, tokenizer, all_pairs, build, generic, layers=[20, 24], rank=2, loop=loop)
    np.testing.assert_array_equal(again.residual_side, fit.residual_side)


def test_default_layers_are_every_second_from_two_thirds_of_the_depth_and_never_the_last():
    assert default_unlink_layers(30) == [20, 22, 24, 26, 28]
    assert default_unlink_layers(8) == [5]
    assert default_unlink_layers(2) == [1]


def test_a_layer_the_model_lacks_is_refused_before_the_fit(smollm2):
    from editor.errors import EditorError

    model, tokenizer, info = smollm2
    all_pairs = load_seegull()
    build = split_pairs(all_pairs)["build"]
    with pytest.raises(EditorError, match="layer"):
        fit_unlink(model, info, tokenizer, all_pairs, build, torch.zeros(64, dtype=torch.long), layers=[99])


def test_an_unlink_fit_is_plain_data():
    fit = UnlinkFit([3], np.ones((1, 1, 4), np.float32), np.ones((1, 1, 6), np.float32), [0.5])
    (edit,) = fit.edits(2.0)
    assert edit.kind == "rank_one" and edit.u == [1.0] * 4 and edit.v == [1.0] * 6 and edit.scale == 2.0
