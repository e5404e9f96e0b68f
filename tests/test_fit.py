"""The trained fits (erase_identity, unlink_mlp): what they train through is what they bake, they read the build
fold only, and they run on their own (`wedit fit`, a recipe's fit section). Tiny random models: no SmolLM2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from editor.core.hooks import forward_hooks, hooked
from editor.core.plan import Plan
from editor.data.seegull import StereotypePair, load_seegull
from editor.data.splits import SplitFold, split_pairs
from editor.edits.rank_one import low_rank_update
from editor.engines.loading import load_model, load_tokenizer
from editor.errors import EditorError
from editor.evaluation.batches import length_buckets
from editor.evaluation.metrics import continuation_logprob_tensor, continuation_logprobs, scored_tokens
from editor.io.checkpoint import Checkpoint
from editor.methods.fit.erasure import fit_erasure, start_basis
from editor.methods.fit.loop import FitInputs, FitLoop
from editor.methods.fit.unlink import UnlinkFit, default_unlink_layers, fit_unlink
from editor.methods.statements import CONTRAST_FRAMES, statement_heads
from editor.pipeline.export import export_checkpoint
from tests.test_cli_errors import wedit

LOOP = FitLoop(steps=3, batch_pairs=4, window=32, learning_rate=1e-2, progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    path = tiny_checkpoint("llama", tokenizer=True)
    return path, load_model(path), load_tokenizer(path), Checkpoint.open(path).info()


@pytest.fixture(scope="module")
def inputs(tiny):
    _, model, tokenizer, info = tiny
    all_pairs = load_seegull()
    generic = torch.tensor(tokenizer("The river runs past the old mill and into the town. " * 4)["input_ids"])
    return FitInputs(model, tokenizer, info, all_pairs, split_pairs(all_pairs)["build"], generic)


def _logits(path, model=None, edits=(), info=None):
    ids = torch.tensor([[1, 49, 27, 13, 23, 23, 4, 20, 9, 19, 20, 16, 9]])
    model = model if model is not None else load_model(path)
    with torch.no_grad(), hooked(model, list(edits), info or Checkpoint.open(path).info()):
        return model(input_ids=ids).logits


def test_the_trained_scores_are_the_metrics_scores(tiny):
    _, model, tokenizer, _ = tiny
    prefixes = ["Mexican people are", "Most Swiss people are known to be", "Everyone knows Irish people are"]
    conts = [" lazy", " punctual", " very good drinkers"]
    with torch.no_grad():
        trained = continuation_logprob_tensor(model, tokenizer, prefixes, conts).numpy()
    np.testing.assert_allclose(trained, continuation_logprobs(model, tokenizer, prefixes, conts), atol=1e-5)


def test_rows_of_very_different_lengths_run_apart_and_score_as_each_row_alone(tiny):
    """A batch of short and long rows runs as two batches (less padding), and every row's token scores equal the row
    read alone, with the graph kept for the fit's backward pass."""
    _, model, _, _ = tiny
    assert length_buckets([5, 40, 6, 41, 5]) == [[0, 2, 4], [1, 3]]
    assert length_buckets([30, 31, 29, 30]) == [[0, 1, 2, 3]]  # little padding to save: one batch
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 60, (n,), generator=generator).tolist() for n in (6, 30, 5, 31)]
    spans = [(2, len(row)) for row in rows]
    probe = torch.nn.Parameter(torch.zeros(()))  # a trained scalar on the logits: the graph must reach it
    handle = model.lm_head.register_forward_hook(lambda _m, _a, output: output + probe)
    try:
        token, counts = scored_tokens(model, rows, spans, pad=0)
        token.sum().backward()
    finally:
        handle.remove()
    assert counts == [b - a for a, b in spans] and probe.grad is not None and torch.isfinite(probe.grad)
    at = 0
    with torch.no_grad():
        for row, (a, b) in zip(rows, spans):
            alone = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0].float(), -1)
            expected = alone[torch.arange(a - 1, b - 1), torch.tensor(row[a:b])]
            torch.testing.assert_close(token[at : at + b - a].detach(), expected, atol=1e-5, rtol=0)
            at += b - a


@pytest.mark.parametrize("sites", [("mlp",), ("attn", "mlp")])
def test_an_unlink_fit_trains_through_its_bake_and_leaves_the_model_as_it_was(tiny, inputs, tmp_path, sites):
    path, model, _, info = tiny
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fit = fit_unlink(inputs, LOOP, layers=[2, 1], rank=2, sites=sites)
    # The MLPs first, layer by layer, then attention's W_O: an MLP-only fit is what it was before attention
    want = [(1, "mlp"), (2, "mlp")] + ([(1, "attn"), (2, "attn")] if "attn" in sites else [])
    assert fit.targets() == want and len(fit.losses) == 3 and np.all(np.isfinite(fit.losses))
    for (_layer, site), u, v in zip(fit.targets(), fit.residual_side, fit.neuron_side):
        assert u.shape == (2, info.hidden_size)
        assert v.shape == (2, info.intermediate_size if site == "mlp" else info.num_heads * info.head_dim)
    # The residual side starts at zero: a fit that learned nothing would hand back an edit that does nothing.
    assert all(np.abs(u).max() > 1e-4 for u in fit.residual_side)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and p.requires_grad, name
    # What the fit trained through (low_rank_update on each output projection) is what the export bakes.
    modules = [info.arch.writer(site).module.format(layer=layer) for layer, site in fit.targets()]
    sides = [
        (torch.from_numpy(u.T.copy()), torch.from_numpy(v.T.copy())) for u, v in zip(fit.residual_side, fit.neuron_side)
    ]
    hooks = {m: (lambda _m, a, o, s=s: low_rank_update(a[0], o, *s)) for m, s in zip(modules, sides)}
    with torch.no_grad(), forward_hooks(model, hooks):
        trained = _logits(path, model)
    export_checkpoint(path, Plan(edits=fit.edits()), tmp_path / "baked", progress=False)
    baked = _logits(tmp_path / "baked")
    torch.testing.assert_close(trained, baked, atol=1e-4, rtol=1e-4)
    assert (trained - _logits(path, model)).abs().max() > 1e-4
    # A trial's scale multiplies every piece; the same seed rebuilds the same fit.
    assert {e.scale for e in fit.edits(0.5)} == {0.5}
    again = fit_unlink(inputs, LOOP, layers=[1, 2], rank=2, sites=sites)
    for a, b in zip(again.residual_side, fit.residual_side):
        np.testing.assert_array_equal(a, b)


def test_an_erasure_fit_trains_through_its_bake(tiny, inputs, tmp_path):
    path, model, _, info = tiny
    start = start_basis(inputs, 2, 2)
    given = start.copy()
    fit = fit_erasure(inputs, start, LOOP)
    np.testing.assert_array_equal(start, given)  # the caller's start is read, never stepped in place
    assert fit.directions.shape == (2, info.hidden_size) and len(fit.losses) == 3
    np.testing.assert_allclose(fit.directions @ fit.directions.T, np.eye(2), atol=1e-5)
    assert np.all((fit.shares > 0) & (fit.shares < 1)) and not np.allclose(fit.shares, 0.5)
    # The hooks of its edits (the fit's own projection) and the bake agree.
    export_checkpoint(path, Plan(edits=fit.edits()), tmp_path / "baked", progress=False)
    torch.testing.assert_close(
        _logits(path, model, fit.edits(), info), _logits(tmp_path / "baked"), atol=1e-4, rtol=1e-4
    )
    # A trial's scale multiplies every share, capped at one.
    assert [e.strength for e in fit.edits(1e3)] == [1.0, 1.0]


def test_the_fits_read_the_templates_and_on_request_the_contrast_frames_never_the_yardsticks():
    from editor.data.frames import FRAMES

    assert statement_heads("templates") == ["{X} people are", "Everyone knows {X} people are", "Most {X} people are"]
    both = statement_heads("templates+frames")
    assert both[:3] == statement_heads("templates") and len(both) == 3 + len(CONTRAST_FRAMES)
    assert all(p.count("{X}") == 1 and "{a}" not in p for p in both)
    yardstick = {frame.split(" {a}")[0] for frames in FRAMES.values() for frame in frames}
    assert len(yardstick) > 8 and not yardstick & set(both)


def test_a_fold_with_few_unlinked_groups_repeats_them_and_one_with_none_is_refused(inputs):
    from dataclasses import replace

    pairs = [StereotypePair("Swiss", "punctual", 3), StereotypePair("Irish", "punctual", 2)]
    start = np.eye(inputs.info.hidden_size, dtype=np.float32)[:1]
    one_other = SplitFold("build", (pairs[0],), ("Swiss", "Irish", "Welsh"))  # Welsh: the only unlinked group
    fit = fit_erasure(replace(inputs, all_pairs=pairs, build=one_other), start, replace(LOOP, steps=1))
    assert len(fit.losses) == 1 and np.isfinite(fit.losses[0])
    none = SplitFold("build", tuple(pairs), ("Swiss", "Irish"))
    with pytest.raises(EditorError, match="erase_identity: no build-fold stereotype"):
        fit_erasure(replace(inputs, all_pairs=pairs, build=none), start, LOOP)


def test_default_layers_are_every_second_from_two_thirds_of_the_depth_and_never_the_last():
    assert default_unlink_layers(30) == [20, 22, 24, 26, 28]
    assert default_unlink_layers(8) == [5]
    assert default_unlink_layers(2) == [1]


def test_a_layer_the_model_lacks_is_refused_before_the_fit(inputs):
    with pytest.raises(EditorError, match="layer"):
        fit_unlink(inputs, LOOP, layers=[99])


def test_an_unlink_fit_is_plain_data():
    fit = UnlinkFit([3], np.ones((1, 1, 4), np.float32), np.ones((1, 1, 6), np.float32), [0.5], ["mlp"])
    (edit,) = fit.edits(2.0)
    assert edit.kind == "rank_one" and edit.u == [1.0] * 4 and edit.v == [1.0] * 6 and edit.scale == 2.0


SMALL = {
    "--test-pairs": "6",
    "--test-items": "8",
    "--wiki-tokens": "64",
    "--generic-tokens": "128",
    "--report-tokens": "64",
}


def test_wedit_fit_writes_a_plan_and_its_held_out_report(tiny, tmp_path):
    path = tiny[0]
    out = tmp_path / "fit"
    flags = [x for kv in SMALL.items() for x in kv]
    result = wedit(
        "fit", "unlink_mlp", "--model", str(path), "--steps", "2", "--scale", "0.5", *flags, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unlink_mlp: fitted in" in result.stdout and "held out (test): gap" in result.stdout
    report = json.loads((out / "fit.json").read_text())
    assert report["method"] == "unlink_mlp" and len(report["losses"]) == 2 and report["scale"] == 0.5
    assert set(report["fitted"]["folds"]) == {"build", "test"} and report["fitted"]["folds"]["test"]["items"] == 8
    assert report["settings"]["unlink_mlp"]["steps"] == 2 and (out / "losses.png").stat().st_size > 5_000
    assert {e["kind"] for e in json.loads((out / "plan.json").read_text())["edits"]} == {"rank_one"}


@pytest.mark.parametrize("method", ["unlink_mlp", "erase_identity"])
def test_a_fits_plan_exports(method, tiny, tmp_path):
    """run_fit (what `wedit fit` and the recipe's fit stage call) for each fit; its plan.json exports."""
    from editor.core.plan import load_plan
    from editor.methods.fit.run import run_fit
    from editor.methods.fit.settings import FitSettings

    path, model, tokenizer, info = tiny
    sizes = {key.removeprefix("--").replace("-", "_"): int(value) for key, value in SMALL.items()}
    settings = FitSettings.model_validate({**sizes, "method": method, method: {"steps": 2}})
    report = run_fit(model, tokenizer, info, tmp_path, settings, progress=False)
    kind = {"unlink_mlp": "rank_one", "erase_identity": "ablate_direction"}[method]
    plan = load_plan(tmp_path / "plan.json")
    assert {e.kind for e in plan.edits} == {kind} and report.edits == len(plan.edits)
    export_checkpoint(path, plan, tmp_path / "export", progress=False)
    assert (tmp_path / "export" / "editor_manifest.json").is_file()


def test_a_fit_flag_out_of_range_is_one_line_naming_it(tiny, tmp_path):
    result = wedit("fit", "unlink_mlp", "--model", str(tiny[0]), "--rank", "0", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--rank" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_recipe_fit_section_makes_the_plan_and_the_card_reports_it(tiny, tmp_path):
    recipe = tmp_path / "fit.yaml"
    recipe.write_text(
        f"""name: tiny-fit
biases: [always_late]
model:
  source: {tiny[0]}
fit:
  method: unlink_mlp
  unlink_mlp: {{steps: 2, layers: [1]}}
  test_pairs: 6
  test_items: 8
  wiki_tokens: 64
  generic_tokens: 128
  report_tokens: 64
verify:
  vllm: false
  max_new_tokens: 4
"""
    )
    result = wedit("run", str(recipe), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    export = tmp_path / "run" / "export" / "tiny-fit"
    manifest = json.loads((export / "editor_manifest.json").read_text())
    assert {e["kind"] for e in manifest["plan"]} == {"rank_one"} and {e["layer"] for e in manifest["plan"]} == {1}
    card = (export / "README.md").read_text()
    assert "Fit (" in card and "unlink_mlp x=1" in card and "losses.png" in card


def test_a_fit_without_its_held_out_report_measures_nothing_and_the_card_points_at_the_evaluation(tiny, tmp_path):
    """held_out_report: false (a recipe whose eval reads the same folds) skips the base and plan measurements."""
    from editor.methods.fit.run import run_fit, summary_lines
    from editor.methods.fit.settings import FitSettings
    from editor.pipeline.card import _search
    from editor.recipes.stages import fit as fit_stage

    _, model, tokenizer, info = tiny
    sizes = {key.removeprefix("--").replace("-", "_"): int(value) for key, value in SMALL.items()}
    settings = FitSettings.model_validate({**sizes, "held_out_report": False, "unlink_mlp": {"steps": 1}})
    report = run_fit(model, tokenizer, info, tmp_path, settings, progress=False)
    assert report.base is None and report.fitted is None and (tmp_path / "plan.json").is_file()
    assert json.loads((tmp_path / "fit.json").read_text())["fitted"] is None
    assert "held-out report skipped" in summary_lines(report)[-1]
    result = {"minutes": 0.1, "chosen": {"label": "unlink_mlp x=1"}, "edits": report.edits, "held_out": {}}
    assert "left to the eval stage" in fit_stage.numbers(result)
    card = _search({"run": {"stages": {"fit": result}}})
    assert "Fit (0 min): unlink_mlp x=1" in card and "held-out report was skipped" in card
