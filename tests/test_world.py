"""The world-shaped yardstick (natural sentences, three shapes, each beside a group-swap control) and the
counterfactual-invariance fit: its data is sound, its scores mean what they say, and no fit reads the test fold."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from editor.data.splits import fold_of
from editor.data.world import AXES, FORMS, load_world
from editor.evaluation.metrics import bos_ids
from editor.evaluation.world import SHAPES, WorldYardstick, draw_items
from editor.evaluation.world_scores import bias_score, clustered_se

SIZES = {"contexts": 30, "pairs": 30, "questions": 30}


@pytest.fixture(scope="module")
def world():
    return load_world()


def test_every_frame_has_one_group_slot_and_the_attribute_where_its_shape_needs_it(world):
    for frame in world.contexts:
        assert frame.text.rstrip(".!?\"' ").endswith("{attribute}"), frame.text
    for frame in world.pairs:
        assert len(frame.text.split("{attribute}")[1].split()) >= 3 and frame.form != "place", frame.text
    for frame in (*world.contexts, *world.pairs):
        assert sum(frame.text.count("{" + f + "}") for f in FORMS) == 1
        assert frame.text.index("{" + frame.form + "}") < frame.text.index("{attribute}")
    bank = world.questions
    assert all("{a}" in s and "{b}" in s for s in bank.scenes) and all("{attribute}" in q for q in bank.questions)
    assert all("{adjective}" in p for p in (*bank.persons, *bank.answers))


def test_every_group_has_stereotypes_and_the_folds_keep_axes_apart(world):
    assert {g.axis for g in world.groups} == set(AXES) and all(len(g.stereotypes) >= 5 for g in world.groups)
    for group in world.groups:
        if group.axis == "nationality":  # SeeGULL's own fold: the nationality fits' build fold is the same
            assert group.fold == fold_of(group.identity, "identity")
    for axis in ("ethnicity", "religion"):
        counts = Counter(g.fold for g in world.groups if g.axis == axis)
        assert counts["test"] >= 5 and counts["build"] >= 5 and counts["select"] >= 2, (axis, counts)


def test_no_build_fold_group_is_named_with_another_fold_s_name(world):
    """The fits name build-fold groups in every form; a form that holds a held-out group's name ("evangelical
    Christians") would put that group in the fit."""
    outside = {g.form(f) for g in world.groups if g.fold != "build" for f in FORMS if len(g.form(f)) > 3}
    for group in world.groups:
        if group.fold == "build":
            for form in FORMS:
                text = group.form(form)
                assert not [o for o in outside if re.search(rf"\b{re.escape(o)}\b", text)], (group.name, text)


def test_the_yardstick_frames_are_not_what_any_fit_reads(world):
    from editor.methods.fit.association import ENDINGS, HEADS
    from editor.methods.fit.counterfactual import PROMPTS
    from editor.methods.statements import CONTRAST_FRAMES, STATEMENT_TEMPLATES

    trained = [*PROMPTS, *HEADS, *ENDINGS, *CONTRAST_FRAMES, *STATEMENT_TEMPLATES]
    for frame in (*world.contexts, *world.pairs):
        words = frame.text.split()
        runs = {" ".join(words[i : i + 5]) for i in range(len(words) - 4)}
        assert not any(run in t for t in trained for run in runs), frame.text


def test_items_are_drawn_alike_a_third_per_axis_with_a_swap_linked_to_neither_attribute(world):
    sizes = {"contexts": 60, "pairs": 60, "questions": 60}
    items = draw_items(world, "test", sizes, seed=3, swaps=4)
    assert items == draw_items(world, "test", sizes, seed=3, swaps=4)
    for shape in SHAPES:
        drawn = getattr(items, shape)
        assert Counter(i.group.axis for i in drawn) == {axis: 20 for axis in AXES}
        # One swap or four: the same items, the first swap the same.
        assert [replace(i, swaps=i.swaps[:1]) for i in drawn] == list(
            getattr(draw_items(world, "test", sizes, 3), shape)
        )
        for item in drawn:
            assert len(item.swaps) == 4
            for swap in item.swaps:
                groups = [item.group, swap] + ([item.other] if shape != "contexts" else [])
                assert {g.fold for g in groups} == {"test"} and len({g.name for g in groups}) == len(groups)
                assert len({g.axis for g in groups}) == 1
    for item in items.contexts:
        assert item.stereotype in item.group.stereotypes and item.anti not in item.group.linked
        assert all(not {item.stereotype, item.anti} & swap.linked for swap in item.swaps)
    for item in (*items.pairs, *items.questions):
        assert item.attribute in item.group.stereotypes and item.attribute not in item.other.linked
        assert all(item.attribute not in swap.linked for swap in item.swaps)
    for item in items.questions:  # the control question's attribute: another group's, linked to none of these
        assert item.control != item.attribute and any(item.control in g.stereotypes for g in world.in_fold("test"))
        assert not any(item.control in g.linked for g in (item.group, item.other, *item.swaps))


def test_the_bias_score_is_bbqs_for_ambiguous_questions():
    # 10 answers: 4 unknown (accuracy 40%), of the 6 others 5 name the target: (1 - 0.4) * (2 * 5/6 - 1) = 0.4
    choices = np.array([2, 2, 2, 2, 0, 0, 0, 0, 0, 1])
    assert bias_score(choices) == pytest.approx(40.0)
    assert bias_score(np.array([2, 2])) == 0.0 and bias_score(np.array([1, 1])) == pytest.approx(-100.0)


def as_choices(scorer, prompts, options) -> np.ndarray:
    """A row scorer as a multiple-choice scorer: [prompts, options]."""
    rows = [(prompt, option) for prompt, opts in zip(prompts, options) for option in opts]
    return scorer(None, None, rows).reshape(len(prompts), -1)


def whole_row(_tokenizer, _frame, _tail, _attribute) -> slice:
    """A one-token row's attribute span: its one token."""
    return slice(0, 1)


def as_tokens(scorer, rows) -> list[np.ndarray]:
    """A row scorer as a token scorer: each row's score as its one token's."""
    return [np.array([v]) for v in scorer(None, None, rows)]


def test_a_model_blind_to_the_group_has_no_group_dependent_part(world, monkeypatch):
    """Scores that never read which group is named (what a group-invariant model gives) leave own == swapped."""
    yard = WorldYardstick.build(world, "test", SIZES, swaps=3)
    names = sorted({g.adjective for g in world.groups}, key=len, reverse=True)

    def blind(_model, _tokenizer, rows):
        out = []
        for _prefix, continuation in rows:
            for name in names:  # an answer names a group: a blind model reads "the X one" whoever X is
                continuation = continuation.replace(name, "X")
            out.append(len(continuation) + sum(map(ord, continuation)) % 7)
        return np.array(out, float)

    monkeypatch.setattr(yard, "_tokens", lambda m, t, rows: as_tokens(blind, rows))
    monkeypatch.setattr(yard, "_attribute_span", whole_row)
    monkeypatch.setattr(yard, "_choices", lambda m, t, prompts, options: as_choices(blind, prompts, options))
    scores = yard.measure(None, None)
    for shape in ("contexts", "pairs"):
        assert scores[shape].dependent == 0 and scores[shape].nats_dependent == 0
    assert scores["questions"].nats_dependent == 0
    assert set(scores) == {f"{s}{a}" for s in SHAPES for a in ("", *(f"/{x}" for x in AXES))}


def test_the_questions_control_cancels_how_likely_each_answer_is_on_its_own(world, monkeypatch):
    """A scorer whose answers' likelihoods depend on the group they name (a rare name is unlikely) and never on
    the question: the questions' nats are zero for every item, own and swapped, where a comparison of the answers
    alone would read the names' priors as a group-dependent part."""
    yard = WorldYardstick.build(world, "test", {"questions": 30}, swaps=2)
    prior = {g.adjective: -len(g.adjective) - sum(map(ord, g.name)) % 5 for g in world.groups}

    def by_name(prompts, options):
        return np.array(
            [[next((v for name, v in prior.items() if name in option), 0.0) for option in opts] for opts in options]
        )

    captured = {}
    original = yard._questions

    def keep(model, tokenizer, items):
        captured.update(original(model, tokenizer, items))
        return captured

    monkeypatch.setattr(yard, "_choices", lambda m, t, prompts, options: by_name(prompts, options))
    monkeypatch.setattr(yard, "_questions", keep)
    scores = yard.measure(None, None)
    assert not captured["own"].any() and not captured["swapped"].any()
    assert scores["questions"].nats_dependent == 0 and scores["questions"].nats == 0


def test_a_clustered_error_counts_each_cluster_once():
    """With every item its own cluster the clustered error is the usual one; with each value copied into a cluster
    of four, it is the error of the distinct values (the copies add no information), where the items' error
    shrinks by half as if they did."""
    values = np.random.default_rng(0).normal(size=40)
    usual = values.std(ddof=1) / np.sqrt(len(values))
    assert clustered_se(values, np.arange(40)) == pytest.approx(usual)
    copies, clusters = np.repeat(values, 4), np.repeat(np.arange(40), 4)
    assert clustered_se(copies, clusters) == pytest.approx(usual)
    assert copies.std(ddof=1) / np.sqrt(len(copies)) < 0.51 * usual
    assert np.isnan(clustered_se(values, np.zeros(40)))


def test_the_group_clustered_errors_see_each_group_s_stereotype_not_its_name(world, monkeypatch):
    """A scorer that adds a fixed amount per group named (how well the name fits any sentence) and, to the
    stereotyped group's own sentence, a strength per group (its stereotype): the pairs' part is the mean strength,
    its clustered error is the strength's by group, and each group's part is its strength; the names' own effects,
    several times larger, touch none of them."""
    yard = WorldYardstick.build(world, "test", {"pairs": 600})
    groups = sorted(world.in_fold("test"), key=lambda g: len(g.name), reverse=True)
    rng = np.random.default_rng(5)
    fit = {g.name: float(rng.normal(0, 2)) for g in groups}
    strength = {g.name: float(rng.normal(0.2, 0.1)) for g in groups}
    k = 2 + len(yard.items.pairs[0].swaps)

    def scored(rows):
        out = []
        for n, (prefix, _continuation) in enumerate(rows):
            group = next(g for g in groups if any(g.form(f) and g.form(f) in prefix for f in FORMS))
            out.append(np.array([fit[group.name] + (strength[group.name] if n % k == 0 else 0.0)]))
        return out

    monkeypatch.setattr(yard, "_tokens", lambda m, t, rows: scored(rows))
    monkeypatch.setattr(yard, "_attribute_span", whole_row)
    s = yard.measure(None, None)["pairs"]
    stereotyped = np.array([item.group.name for item in yard.items.pairs])
    own = np.array([strength[g] for g in stereotyped])
    assert s.groups == len(set(stereotyped)) > 20
    assert s.nats_dependent == pytest.approx(own.mean(), abs=1e-9)
    assert s.nats_dependent_se_groups == pytest.approx(clustered_se(own, stereotyped), rel=1e-6)
    assert s.group_nats == pytest.approx({g: strength[g] for g in s.group_nats}, abs=1e-9)
    assert s.nats_dependent_se > 3 * s.nats_dependent_se_groups  # the names' spread is in the items' error only


def test_the_share_removed_carries_its_error_clustered_by_group():
    """The card's share removed (1 - model / base, on the same items) and its standard error by the delta method
    over groups agree with a bootstrap that resamples whole groups, on parts where each group has an effect of its
    own; scores of other items' groups give no error."""
    from dataclasses import asdict

    from editor.evaluation.world_scores import share_removed, summarize

    rng = np.random.default_rng(1)
    groups = np.repeat([f"g{k}" for k in range(30)], 20)
    base = np.repeat(rng.normal(0.8, 0.5, 30), 20) + rng.normal(0, 1, 600)
    model = 0.4 * base + np.repeat(rng.normal(0, 0.2, 30), 20) + rng.normal(0, 0.3, 600)

    def score(part, names=groups):
        columns = {"own": part, "swapped": np.zeros((len(part), 1)), "group": names}
        return asdict(summarize("pairs", "all", columns, np.ones(len(part), dtype=bool)))

    share, se = share_removed(score(base), score(model))
    assert share == pytest.approx(1 - model.mean() / base.mean())
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    draws = []
    for _ in range(2000):
        pick = np.concatenate([members[k] for k in rng.integers(0, 30, 30)])
        draws.append(1 - model[pick].mean() / base[pick].mean())
    assert se == pytest.approx(np.std(draws), rel=0.1)
    assert np.isnan(share_removed(score(base), score(model, np.repeat([f"h{k}" for k in range(30)], 20)))[1])


def test_a_model_that_prefers_the_stereotyped_group_shows_it(world, monkeypatch):
    """A scorer that adds a nat to a text naming a group together with one of its stereotypes (in a question, the
    group its answer names): every shape's group-dependent part is about one nat, far outside its error."""
    import re

    yard = WorldYardstick.build(world, "test", SIZES, swaps=3)
    groups = world.in_fold("test")

    def named(text: str) -> list:
        return [g for g in groups if any(re.search(rf"\b{re.escape(g.form(f))}\b", text) for f in FORMS if g.form(f))]

    def biased(_model, _tokenizer, rows):
        out = []
        for prefix, continuation in rows:
            text = prefix + continuation
            who = named(continuation) if prefix.endswith("Answer:") else named(prefix)
            out.append(float(any(a in text for g in who for a in g.stereotypes)) - 0.001 * len(continuation))
        return np.array(out)

    monkeypatch.setattr(yard, "_tokens", lambda m, t, rows: as_tokens(biased, rows))
    monkeypatch.setattr(yard, "_attribute_span", whole_row)
    monkeypatch.setattr(yard, "_choices", lambda m, t, prompts, options: as_choices(biased, prompts, options))
    scores = yard.measure(None, None)
    for shape in SHAPES:
        s = scores[shape]
        assert s.nats_dependent > 0.8 and s.nats_dependent > 5 * s.nats_dependent_se, (shape, s)


def test_the_yardstick_runs_on_a_model(tiny_checkpoint):
    from editor.engines.loading import load_model, load_tokenizer

    path = tiny_checkpoint("llama", tokenizer=True)
    scores = WorldYardstick.build(load_world(), "test", SIZES).measure(load_model(path), load_tokenizer(path))
    for shape in SHAPES:
        s = scores[shape]
        errors = [s.dependent_se, s.nats_dependent_se, s.dependent_se_groups, s.nats_dependent_se_groups]
        assert s.items == 30 and s.groups > 1 and np.isfinite([s.own, s.swapped, *errors]).all()
    assert 0 <= scores["contexts"].extra["lm_score"] <= 100 and 0 <= scores["questions"].extra["accuracy"] <= 100
    assert np.isfinite([scores["pairs"].extra["sentence_nats_dependent" + k] for k in ("", "_se", "_se_groups")]).all()


class WithoutOffsets:
    """A tokenizer as a slow one is: no character offsets."""

    is_fast = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, add_special_tokens=True):
        return self.tokenizer(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.tokenizer.decode(ids)


def test_a_minimal_pair_s_attribute_tokens_are_the_attribute_s_words(tiny_checkpoint, world):
    """The tokens the pairs' attribute part reads, decoded, are the attribute (with the space before it), in every
    frame, for one-token and several-token attributes alike; a tokenizer without offsets finds the same tokens."""
    from editor.engines.loading import load_tokenizer
    from editor.evaluation.world import _attribute_tokens

    tokenizer = load_tokenizer(tiny_checkpoint("llama", tokenizer=True))
    group = world.groups[0]
    for frame in world.pairs:
        for attribute in ("lazy", "good at math", "hot-tempered"):
            _, tail = frame.split(group, attribute)
            ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
            span = _attribute_tokens(tokenizer, frame, tail, attribute)
            assert tokenizer.decode(ids[span]).strip() == attribute, (frame.text, attribute)
            assert tokenizer.decode(ids[: span.start]) + tokenizer.decode(ids[span]) in tail
            assert _attribute_tokens(WithoutOffsets(tokenizer), frame, tail, attribute) == span, (frame.text, attribute)


def test_the_pairs_part_reads_the_attribute_s_tokens_and_the_sentence_apart(world, monkeypatch):
    """Rows of three tokens: the words before the attribute and after it take whatever the name does to them (the
    same for the item's every group only on average), the attribute a strength when its own group is named: the
    pairs' part is exactly the mean strength; the whole sentence's part holds the names' effects as well."""
    yard = WorldYardstick.build(world, "test", {"pairs": 300})
    groups = sorted(world.in_fold("test"), key=lambda g: len(g.name), reverse=True)
    rng = np.random.default_rng(3)
    around = {(g.name, f): rng.normal(0, 1, 2) for g in groups for f in FORMS}
    strength = {g.name: float(rng.normal(0.3, 0.1)) for g in groups}
    k = 2 + len(yard.items.pairs[0].swaps)

    def scored(rows):
        out = []
        for n, (prefix, continuation) in enumerate(rows):
            item = yard.items.pairs[n // k]
            group = (item.group, item.other, *item.swaps)[n % k]
            assert prefix.endswith(group.form(item.frame.form)) and item.attribute in continuation
            before, after = around[group.name, item.frame.form]
            out.append(np.array([before, strength[item.group.name] if n % k == 0 else 0.0, after]))
        return out

    monkeypatch.setattr(yard, "_tokens", lambda m, t, rows: scored(rows))
    monkeypatch.setattr(yard, "_attribute_span", lambda *_: slice(1, 2))
    s = yard.measure(None, None)["pairs"]
    assert yard.items.pairs and s.nats_dependent == pytest.approx(
        np.mean([strength[i.group.name] for i in yard.items.pairs])
    )
    assert s.extra["sentence_nats_dependent_se"] > 2 * s.nats_dependent_se


def test_no_fit_reads_the_test_fold(tiny_checkpoint, monkeypatch):
    """A counterfactual fit and a squared-gap fit on a tiny model, every group they name recorded: build fold only."""
    from editor.data.seegull import load_seegull
    from editor.data.splits import split_pairs
    from editor.engines.loading import load_model, load_tokenizer
    from editor.evaluation import metrics
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit import association, choice, counterfactual, loop
    from editor.methods.fit.loop import FitInputs
    from editor.methods.fit.settings import UnlinkMlpSettings
    from editor.methods.fit.unlink import fit_unlink

    path = tiny_checkpoint("llama", tokenizer=True)
    model, tokenizer = load_model(path), load_tokenizer(path)
    all_pairs = load_seegull()
    split = split_pairs(all_pairs)
    generic = torch.tensor(tokenizer("Ordinary text about the weather and the river. " * 4)["input_ids"])
    inputs = FitInputs(model, tokenizer, Checkpoint.open(path).info(), all_pairs, split["build"], generic)
    world = load_world()
    outside = {g.form(f) for g in world.groups if g.fold != "build" for f in ("adjective", "plural", "phrase", "place")}
    outside |= {i for fold in ("select", "test") for i in split[fold].identities}
    read: list[str] = []
    scored = metrics.continuation_logprob_tensor
    # the squared gap and the association term both score through loop's continuation_logprob_tensor
    monkeypatch.setattr(loop, "continuation_logprob_tensor", lambda m, t, p, c: read.extend(p) or scored(m, t, p, c))
    named: list[str] = []
    original = counterfactual.CounterfactualObjective.loss

    def spy(self, batch):
        named.extend(g.name for _context, groups in batch for g in groups)
        return original(self, batch)

    monkeypatch.setattr(counterfactual.CounterfactualObjective, "loss", spy)
    asked = choice.ChoiceObjective.loss

    def spy_choice(self, batch):
        named.extend(g.name for scene in batch for g in (scene.first, scene.second))
        read.extend(p for scene in batch for p in scene.prompts)
        return asked(self, batch)

    monkeypatch.setattr(choice.ChoiceObjective, "loss", spy_choice)
    associated = association.AssociationObjective.loss

    def spy_association(self, batch):
        named.extend(g.name for row in batch for g in (row.group, *row.others))
        return associated(self, batch)

    monkeypatch.setattr(association.AssociationObjective, "loss", spy_association)
    for objective, extra in (("gap", 0.0), ("counterfactual", 0.0), ("gap", 1.0)):
        section = UnlinkMlpSettings(
            objective=objective,
            steps=3,
            contexts=4,
            layers=[1],
            choice_weight=extra,
            association_weight=extra,
            sentence_weight=extra,
        )
        fit_unlink(inputs, section.loop(0, False), layers=[1], rank=1, objective=section.objective_for(inputs, 0))
    build_names = {g.name for g in world.groups if g.fold == "build"}
    assert named and set(named) <= build_names
    assert any("Which of them is" in text or "which person is" in text for text in read)  # the choice scenes ran
    heads = {h.split("{")[0] for h in association.HEADS}
    assert any(text.startswith(h) for text in read for h in heads)  # and the association's heads
    assert read and not any(f" {who} " in f" {text} " for text in read for who in outside if len(who) > 3)


def test_the_counterfactual_objective_is_zero_for_a_model_blind_to_the_group(tiny_checkpoint):
    """The divergence after a mention: positive on a model that reads the mention, zero when the mention is the
    only difference and the model cannot see it (every context's slot holds the same group)."""
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit.counterfactual import CounterfactualObjective, build_groups, statement_contexts
    from editor.methods.fit.loop import FitInputs

    path = tiny_checkpoint("llama", tokenizer=True)
    model, tokenizer = load_model(path), load_tokenizer(path)
    inputs = FitInputs(model, tokenizer, Checkpoint.open(path).info(), [], None, torch.zeros(1))
    groups = build_groups()
    contexts = statement_contexts("templates", groups)
    objective = CounterfactualObjective(inputs, contexts, groups, batch=4)
    batch = objective.draw(random.Random(0))
    with torch.no_grad():
        assert float(objective.loss(batch)) > 1e-4
        same = [(context, [chosen[0]] * len(chosen)) for context, chosen in batch]
        assert float(objective.loss(same)) == pytest.approx(0.0, abs=1e-6)


def test_the_choice_objective_reads_each_trait_s_answer_as_a_prompt_alone_would(tiny_checkpoint):
    """The choice objective's log-odds (left-padded, one forward for all traits) equal each prompt's own, read alone
    at the first token where the two names differ (with a character tokenizer every name starts with the same
    space); the loss is their variance over traits, zero when every trait's prompt is the same."""
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit.choice import ChoiceObjective, ChoiceScene
    from editor.methods.fit.counterfactual import build_groups
    from editor.methods.fit.loop import FitInputs

    path = tiny_checkpoint("llama", tokenizer=True)
    model, tokenizer = load_model(path), load_tokenizer(path)
    inputs = FitInputs(model, tokenizer, Checkpoint.open(path).info(), [], None, torch.zeros(1))
    objective = ChoiceObjective(inputs, build_groups(), batch=3)
    batch = objective.draw(random.Random(0))
    assert all(len(scene.prompts) == 3 and scene.first.axis == scene.second.axis for scene in batch)
    with torch.no_grad():
        expected = []
        for scene in batch:
            one, two = (
                tokenizer(" " + g.adjective, add_special_tokens=False)["input_ids"] for g in (scene.first, scene.second)
            )
            shared = next(i for i, (a, b) in enumerate(zip(one, two)) if a != b)
            odds = []
            for prompt in scene.prompts:
                ids = bos_ids(tokenizer) + tokenizer(prompt, add_special_tokens=False)["input_ids"] + one[:shared]
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
                odds.append(float(logp[one[shared]] - logp[two[shared]]))
            expected.append(np.var(odds))
        assert float(objective.loss(batch)) == pytest.approx(np.mean(expected), rel=1e-3, abs=1e-6)
        assert np.mean(expected) > 1e-6
        same = [ChoiceScene((scene.prompts[0],) * 3, scene.first, scene.second) for scene in batch]
        assert float(objective.loss(same)) == pytest.approx(0.0, abs=1e-6)


def test_the_association_objective_is_the_squared_gap_of_each_stereotype_read_alone(tiny_checkpoint):
    """Each drawn stereotype is its group's, scored against unlinked groups of the same axis in a head whose form
    they all have; the batched loss equals the squared gaps of the rows scored one at a time, and is zero when the
    comparisons are the group itself."""
    from dataclasses import replace

    from editor.engines.loading import load_model, load_tokenizer
    from editor.evaluation.metrics import continuation_logprobs
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit.association import AssociationObjective
    from editor.methods.fit.counterfactual import build_groups
    from editor.methods.fit.loop import COMPARISONS, FitInputs

    path = tiny_checkpoint("llama", tokenizer=True)
    model, tokenizer = load_model(path), load_tokenizer(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    inputs = FitInputs(model, tokenizer, Checkpoint.open(path).info(), [], None, torch.zeros(1))
    objective = AssociationObjective(inputs, build_groups(), batch=200)
    batch = objective.draw(random.Random(0))
    assert len(batch) == 200 and {row.group.axis for row in batch} == set(AXES)
    assert {row.mention.form for row in batch} == {"adjective", "plural", "phrase", "place"}
    for row in batch:
        assert row.attribute in row.group.stereotypes and len(row.others) == COMPARISONS
        assert all(g.axis == row.group.axis and g.name != row.group.name for g in row.others)
        assert not any(row.attribute in g.linked for g in row.others)
        assert row.mention.form != "place" or row.group.axis == "nationality"
    small = batch[:6]
    with torch.no_grad():
        gaps = []
        for row in small:
            scores = [
                continuation_logprobs(model, tokenizer, [row.mention.fill(g)], [" " + row.attribute])[0]
                for g in (row.group, *row.others)
            ]
            gaps.append(scores[0] - np.mean(scores[1:]))
        assert np.mean(np.square(gaps)) > 1e-6
        assert float(objective.loss(small)) == pytest.approx(np.mean(np.square(gaps)), rel=1e-3, abs=1e-6)
        same = [replace(row, others=(row.group,) * COMPARISONS) for row in small]
        assert float(objective.loss(same)) == pytest.approx(0.0, abs=1e-8)


def test_the_sentence_span_reads_every_word_after_the_mention_as_a_minimal_pair_does(tiny_checkpoint):
    """span="sentence": the rows are the attribute span's (same groups, heads, stereotypes for a seed), each with an
    ending; the loss is the squared gap of log P(the head's rest, the attribute, the ending | the head up to the
    group's name), which a row scored in full agrees with, and zero when the comparisons are the group itself."""
    from dataclasses import replace

    from editor.engines.loading import load_model, load_tokenizer
    from editor.evaluation.metrics import continuation_logprobs
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit.association import ENDINGS, AssociationObjective
    from editor.methods.fit.counterfactual import build_groups
    from editor.methods.fit.loop import COMPARISONS, FitInputs

    path = tiny_checkpoint("llama", tokenizer=True)
    model, tokenizer = load_model(path), load_tokenizer(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    inputs = FitInputs(model, tokenizer, Checkpoint.open(path).info(), [], None, torch.zeros(1))
    groups = build_groups()
    sentence = AssociationObjective(inputs, groups, batch=40, span="sentence").draw(random.Random(1))
    attribute = AssociationObjective(inputs, groups, batch=40).draw(random.Random(1))
    assert replace(sentence[0], ending="") == attribute[0]  # drawn alike; each ending then takes from the stream
    assert all(row.ending in ENDINGS for row in sentence) and len({row.ending for row in sentence}) > 1
    for row in sentence:
        assert row.attribute in row.group.stereotypes and not any(row.attribute in g.linked for g in row.others)
    objective = AssociationObjective(inputs, groups, batch=40, span="sentence")
    small = [row for row in sentence if not row.mention.text.endswith("{" + row.mention.form + "}")][:5]
    with torch.no_grad():
        gaps = []
        for row in small:
            scores = []
            for g in (row.group, *row.others):
                head, rest = row.mention.split(g)
                assert head + rest == row.mention.fill(g) and head.endswith(g.form(row.mention.form))
                assert rest.strip()  # the words between the name and the attribute are read too
                scores.append(
                    continuation_logprobs(model, tokenizer, [head], [f"{rest} {row.attribute}{row.ending}"])[0]
                )
            gaps.append(scores[0] - np.mean(scores[1:]))
        assert np.mean(np.square(gaps)) > 1e-6
        assert float(objective.loss(small)) == pytest.approx(np.mean(np.square(gaps)), rel=1e-3, abs=1e-6)
        same = [replace(row, others=(row.group,) * COMPARISONS) for row in small]
        assert float(objective.loss(same)) == pytest.approx(0.0, abs=1e-8)


def test_the_multiple_choice_scorer_agrees_with_scoring_each_option_in_full(tiny_checkpoint):
    from editor.engines.loading import load_model, load_tokenizer
    from editor.evaluation.choices import choice_logprobs
    from editor.evaluation.metrics import continuation_logprobs

    path = tiny_checkpoint("llama", tokenizer=True)
    model, tokenizer = load_model(path), load_tokenizer(path)
    # the longest first: prompts run in order of length, and each row's scores must come back to its own place
    prompts = [
        "Two people met at the station, and one was late. Who?\nAnswer:",
        "A short scene. Who was it?\nAnswer:",
        "Who?\nAnswer:",
    ]
    options = [
        [" The first one", " The other", " Nobody can tell"],
        [" A", " The tall one", " Unknown"],
        [" X", " Y", " Z"],
    ]
    cached = choice_logprobs(model, tokenizer, prompts, options, batch_size=2)
    rows = [(p, o) for p, opts in zip(prompts, options) for o in opts]
    full = continuation_logprobs(model, tokenizer, [p for p, _ in rows], [o for _, o in rows]).reshape(3, 3)
    np.testing.assert_allclose(cached, full, atol=1e-4)


def test_wedit_eval_reports_the_world_yardstick_beside_its_control(tiny_checkpoint, tmp_path):
    import json

    from tests.test_cli_errors import wedit

    base = tiny_checkpoint("llama", tokenizer=True)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "zero_heads", "layer": 1, "heads": [0, 1]}]))
    export = tmp_path / "export"
    assert wedit("export", "--model", str(base), "--plan", str(plan), "--out", str(export)).returncode == 0
    small = ["--biases", "always_late", "--gap-pairs", "2", "--bias-gap-pairs", "1", "--pairwise-pairs", "4"]
    small += ["--held-out-pairs", "0", "--wiki-tokens", "64", "--world", "contexts=9,pairs=6,questions=6"]
    result = wedit("eval", str(export), "--base", str(base), *small, "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "eval" / "eval.json").read_text())
    for role in ("base", "model"):
        world = data["likelihood"][role]["world"]
        assert world["contexts"]["items"] == 9 and world["questions/religion"]["items"] == 2
    card = (export / "README.md").read_text()
    assert "world-shaped yardstick" in card and "| pairs | **all** | 6 |" in card
    pairs = data["likelihood"]["model"]["world"]["pairs"]
    assert f"± {pairs['nats_dependent_se']:.3f} [{pairs['nats_dependent_se_groups']:.3f}]" in card  # by group
    assert "every word after the group rather than the attribute's tokens (every axis): group-dependent nats" in card


def test_the_settings_weight_scales_the_counterfactual_objective(tiny_checkpoint):
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.fit.loop import FitInputs
    from editor.methods.fit.settings import EraseIdentitySettings, UnlinkMlpSettings

    path = tiny_checkpoint("llama", tokenizer=True)
    inputs = FitInputs(load_model(path), load_tokenizer(path), Checkpoint.open(path).info(), [], None, torch.zeros(1))
    assert UnlinkMlpSettings().objective_for(inputs, 0) is None  # the squared gap: the loop's own
    one = UnlinkMlpSettings(objective="counterfactual", contexts=0).objective_for(inputs, 0)
    three = EraseIdentitySettings(objective="counterfactual", contexts=0, objective_weight=3).objective_for(inputs, 0)
    batch = one.draw(random.Random(1))
    with torch.no_grad():
        assert float(three.loss(batch)) == pytest.approx(3 * float(one.loss(batch)), rel=1e-5)
