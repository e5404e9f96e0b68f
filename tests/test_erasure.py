"""erase_identity's fit on the built-in SmolLM2: what it trains is what it bakes, on the gap's own scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editor.core.hooks import hooked
from editor.data.seegull import load_seegull
from editor.data.splits import split_pairs
from editor.evaluation.metrics import continuation_logprobs
from editor.methods.search.erasure import _Projection, fit_erasure
from editor.methods.search.gap_fit import FitLoop, _continuation_logprobs, fit_prompts


def test_the_trained_scores_are_the_association_gaps_scores(smollm2):
    model, tokenizer, _ = smollm2
    prefixes = ["Mexican people are", "Most Swiss people are known to be", "Everyone knows Irish people are"]
    conts = [" lazy", " punctual", " very good drinkers"]
    with torch.no_grad():
        trained = _continuation_logprobs(model, tokenizer, prefixes, conts, torch.device("cpu")).numpy()
    np.testing.assert_allclose(trained, continuation_logprobs(model, tokenizer, prefixes, conts), atol=1e-4)


def test_a_short_fit_bakes_as_it_trained_and_leaves_the_model_as_it_was(smollm2):
    model, tokenizer, info = smollm2
    all_pairs = load_seegull()
    build = split_pairs(all_pairs)["build"]
    rng = np.random.default_rng(0)
    start = np.linalg.qr(rng.standard_normal((info.hidden_size, 2)))[0].T.astype(np.float32)
    generic = torch.tensor(tokenizer("The river runs past the old mill and into the town. " * 20)["input_ids"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    given = start.copy()
    loop = FitLoop(steps=3, batch_pairs=4, window=32, progress=False)
    fit = fit_erasure(model, info, tokenizer, all_pairs, build, start, generic, loop)
    np.testing.assert_array_equal(start, given)  # the caller's start is read, never stepped in place
    assert fit.directions.shape == (2, info.hidden_size) and len(fit.losses) == 3
    np.testing.assert_allclose(fit.directions @ fit.directions.T, np.eye(2), atol=1e-5)
    assert np.all((fit.shares > 0) & (fit.shares < 1)) and np.all(np.isfinite(fit.losses))
    # The fit moved away from its start (a fit that learns nothing would hand back the start and one half).
    assert not np.allclose(fit.shares, 0.5) and np.linalg.svd(fit.directions @ start.T)[1].min() < 1 - 1e-5
    # Frozen weights, untouched, and trainable again afterwards as they were.
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and p.requires_grad, name
    # The hooks the fit trained with and the AblateDirection edits it hands to the bake agree.
    ids = torch.tensor([tokenizer("Swiss people are known to be")["input_ids"]])
    projection = _Projection(model, info)
    projection.basis = torch.from_numpy(fit.directions.T.copy())
    projection.shares = torch.from_numpy(fit.shares.copy())
    with torch.no_grad():
        with projection:
            trained = model(input_ids=ids).logits
        with hooked(model, fit.edits(), info):
            baked = model(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(trained, baked, atol=1e-4, rtol=1e-4)
    assert (trained - plain).abs().max() > 1e-3
    # A trial's scale multiplies every share, capped at one.
    assert [e.strength for e in fit.edits(1e3)] == [1.0, 1.0]


def test_the_fit_reads_the_templates_and_on_request_the_contrast_frames_never_the_yardsticks():
    from editor.data.frames import FRAMES
    from editor.methods.search.contrasts import CONTRAST_FRAMES

    assert fit_prompts("templates") == ["{X} people are", "Everyone knows {X} people are", "Most {X} people are"]
    both = fit_prompts("templates+frames")
    assert both[:3] == fit_prompts("templates") and len(both) == 3 + len(CONTRAST_FRAMES)
    assert all(p.count("{X}") == 1 and "{a}" not in p for p in both)
    yardstick = {frame.split(" {a}")[0] for frames in FRAMES.values() for frame in frames}
    assert len(yardstick) > 8 and not yardstick & set(both)


def test_a_fold_with_few_unlinked_groups_repeats_them_and_one_with_none_is_refused(smollm2):
    from editor.data.seegull import StereotypePair
    from editor.data.splits import SplitFold
    from editor.errors import EditorError

    model, tokenizer, info = smollm2
    pairs = [StereotypePair("Swiss", "punctual", 3), StereotypePair("Irish", "punctual", 2)]
    generic = torch.tensor(tokenizer("A quiet street with a bakery on the corner. " * 12)["input_ids"])
    start = np.eye(info.hidden_size, dtype=np.float32)[:1]
    one_other = SplitFold("build", (pairs[0],), ("Swiss", "Irish", "Welsh"))  # Welsh: the only unlinked group
    fit = fit_erasure(model, info, tokenizer, pairs, one_other, start, generic, FitLoop(1, window=16, progress=False))
    assert len(fit.losses) == 1 and np.isfinite(fit.losses[0])
    with pytest.raises(EditorError, match="erase_identity: no build-fold stereotype"):
        fit_erasure(model, info, tokenizer, pairs, SplitFold("build", tuple(pairs), ("Swiss", "Irish")), start, generic)
