"""Balanced control groups: every group is swapped in exactly as often as it is the stereotyped group, so that
what a name does to a sentence whatever the attribute cancels out of the group-dependent part."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from editor.data.world import AXES, FORMS, load_world
from editor.evaluation.world import SHAPES, WorldYardstick, draw_items
from editor.evaluation.world_scores import clustered_se, without_names
from editor.evaluation.world_swaps import balanced_choice


@pytest.fixture(scope="module")
def world():
    return load_world()


def test_a_balanced_choice_gives_each_group_its_count_and_only_allowed_groups():
    rng = random.Random(0)
    names = "abcdef"
    stereotyped = [rng.choice(names) for _ in range(400)]
    allowed = [
        [g for g in names if g != s and rng.random() < 0.6] or [next(g for g in names if g != s)] for s in stereotyped
    ]
    drawn = [a[0] for a in allowed]
    given = balanced_choice(stereotyped, allowed, drawn, random.Random(1))
    assert Counter(given) == Counter(stereotyped)
    assert all(g in a for g, a in zip(given, allowed, strict=True))
    assert given == balanced_choice(stereotyped, allowed, drawn, random.Random(1))
    assert given != balanced_choice(stereotyped, allowed, drawn, random.Random(2))


def test_items_a_greedy_pass_strands_are_placed_by_moving_others():
    """Item 0 can only take b; whoever took b first must move to c: found by an augmenting path."""
    stereotyped = ["b", "c", "a"]
    allowed = [["b"], ["b", "a"], ["b", "c"]]
    for seed in range(20):
        given = balanced_choice(stereotyped, allowed, ["b", "a", "c"], random.Random(seed))
        assert given == ["b", "a", "c"]


def test_where_no_balance_exists_the_left_over_items_keep_their_drawn_swap():
    stereotyped = ["a", "a", "b"]
    allowed = [["b"], ["b"], ["a"]]  # two items want b, which is stereotyped once
    given = balanced_choice(stereotyped, allowed, ["b", "b", "a"], random.Random(0))
    assert sorted(given[:2]) == ["b", "b"] and given[2] == "a"


def test_the_test_fold_s_swaps_are_balanced_per_shape_and_axis(world):
    items = draw_items(world, "test", {shape: 300 for shape in SHAPES}, seed=0, swaps=2)
    for shape in SHAPES:
        for axis in AXES:
            mine = [i for i in getattr(items, shape) if i.group.axis == axis]
            stereotyped = Counter(i.group.name for i in mine)
            for k in range(2):
                assert Counter(i.swaps[k].name for i in mine) == stereotyped, (shape, axis, k)


def test_a_name_s_own_effect_cancels_from_the_pairs_group_dependent_part(world, monkeypatch):
    """A scorer that adds a fixed amount per group named, whatever the attribute (how well a name fits any
    sentence): with balanced swaps the pairs' group-dependent part is zero, and so is its error clustered by group
    once names are taken out, though the error over items is not."""
    yard = WorldYardstick.build(world, "test", {"pairs": 600})
    groups = sorted(world.in_fold("test"), key=lambda g: len(g.name), reverse=True)
    fit = {g.name: float(np.random.default_rng(len(g.name) + sum(map(ord, g.name))).normal()) for g in groups}

    def by_name(rows):
        out = []
        for prefix, _continuation in rows:
            group = next(g for g in groups if any(g.form(f) and g.form(f) in prefix for f in FORMS))
            out.append(np.array([fit[group.name]]))
        return out

    monkeypatch.setattr(yard, "_tokens", lambda m, t, rows: by_name(rows))
    monkeypatch.setattr(yard, "_attribute_span", lambda *_: slice(0, 1))
    s = yard.measure(None, None)["pairs"]
    assert abs(s.nats_dependent) < 1e-9 and s.nats_dependent_se > 0.05
    assert s.nats_dependent_se_groups < 1e-9  # the clustered error reads what is left once names are taken out


def test_a_name_s_effect_that_depends_on_its_form_cancels_too(world, monkeypatch):
    """What a name does to the words after it depends on the form it takes ("Jehovah's Witnesses are" is not
    "members of the Jehovah's Witnesses are"): swaps balanced within each frame form cancel a per (name, form)
    effect exactly, and the stratified balance is still exact by name over every form."""
    yard = WorldYardstick.build(world, "test", {"pairs": 600})
    groups = sorted(world.in_fold("test"), key=lambda g: len(g.name), reverse=True)
    rng = np.random.default_rng(4)
    fit = {(g.name, f): float(rng.normal()) for g in groups for f in FORMS}
    k = 2 + len(yard.items.pairs[0].swaps)

    def by_name_and_form(rows):
        out = []
        for n, _row in enumerate(rows):
            item = yard.items.pairs[n // k]
            out.append(np.array([fit[(item.group, item.other, *item.swaps)[n % k].name, item.frame.form]]))
        return out

    monkeypatch.setattr(yard, "_tokens", lambda m, t, rows: by_name_and_form(rows))
    monkeypatch.setattr(yard, "_attribute_span", lambda *_: slice(0, 1))
    assert abs(yard.measure(None, None)["pairs"].nats_dependent) < 1e-9
    contexts = draw_items(world, "test", {"contexts": 600}).contexts
    for shape, items in (("pairs", yard.items.pairs), ("contexts", contexts)):
        for axis in AXES:
            mine = [i for i in items if i.group.axis == axis]
            assert Counter(i.swaps[0].name for i in mine) == Counter(i.group.name for i in mine), (shape, axis)
            by_form = Counter((i.frame.form, i.swaps[0].name) for i in mine)
            assert by_form == Counter((i.frame.form, i.group.name) for i in mine), (shape, axis)


def test_strata_that_cannot_balance_alone_leave_the_rest_to_the_whole():
    """Stratum x can only take b, stratum y only a: neither balances alone, yet over both every group stands in as
    often as it is stereotyped, and an item placed in its own stratum stays there."""
    stereotyped = ["a", "b", "c", "c"]
    allowed = [["b", "c"], ["a", "c"], ["b"], ["a"]]
    strata = ["x", "y", "x", "y"]
    for seed in range(10):
        given = balanced_choice(stereotyped, allowed, ["b", "a", "b", "a"], random.Random(seed), strata)
        assert Counter(given) == Counter(stereotyped) and all(g in a for g, a in zip(given, allowed, strict=True))


def test_the_clustered_error_of_balanced_pairs_matches_how_much_another_draw_of_groups_moves_them(world):
    """Group effects drawn afresh many times on the test fold's real design (each name's own effect, several times
    its stereotype's spread, and noise per item): the error clustered by group once names are taken out is close
    to the spread of the means, where clustering the raw parts reads the names' effects and overstates it."""
    items = draw_items(world, "test", {"pairs": 1500}, seed=0).pairs
    stereotyped = np.array([i.group.name for i in items])
    swapped = np.array([[i.swaps[0].name] for i in items])
    names = sorted(set(stereotyped) | set(swapped.ravel()))
    a, c = np.searchsorted(names, stereotyped), np.searchsorted(names, swapped[:, 0])
    rng = np.random.default_rng(0)
    means, raw, adjusted = [], [], []
    for _ in range(150):
        own_effect, stereotype = rng.normal(0, 0.8, len(names)), rng.normal(0.2, 0.15, len(names))
        part = own_effect[a] - own_effect[c] + stereotype[a] + rng.normal(0, 2.5, len(items))
        means.append(part.mean())
        raw.append(clustered_se(part, stereotyped))
        adjusted.append(clustered_se(without_names(part[:, None], stereotyped, swapped), stereotyped))
    spread = float(np.std(means))
    assert 0.8 * spread < np.mean(adjusted) < 1.6 * spread
    assert np.mean(raw) > 2 * spread
