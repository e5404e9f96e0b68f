"""Balanced control groups for the world yardstick: over one shape's items on one axis, every group is swapped in
exactly as often as it is the stereotyped group.

Why: a swap must be a group linked to none of the item's attributes, so drawing it freely favours the groups with
few stereotypes, which are also the rarer names (in the test fold's 3,000 pairs, Irish Travellers were the
stereotyped group 150 times and the swap 214 times). Whatever a name does to the words around it whatever the
attribute (how predictable the sentence is after "Jewish" or after "Gambian") then enters own - swapped as if it
were a stereotype. When each group stands in as often as it is stereotyped, a name's own effect enters the mean
as often with a plus as with a minus and cancels, and what is left depends on the group *and* the attribute.

The assignment is a transport problem: items on one side, groups with a quota (their count as the stereotyped
group) on the other, an edge where the group may stand in for the item. A random greedy pass fills most of it and
augmenting paths finish it; where no complete assignment exists (a tiny fold), the items left over keep the swap
they were drawn with, so the control is as near balance as the fold allows.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace


def balanced_choice(
    stereotyped: Sequence[str],
    allowed: Sequence[Sequence[str]],
    drawn: Sequence[str],
    rng: random.Random,
    strata: Sequence[Hashable] | None = None,
) -> list[str]:
    """One control group per item: item ``n`` gets one of ``allowed[n]``, and each group is given to as many items
    as it is ``stereotyped`` in; ``drawn[n]`` (the item's freely drawn swap) where no complete assignment exists.
    With ``strata`` (one key per item), the balance is sought within each stratum first; the items a stratum
    cannot place are then placed over all items by augmenting paths, which may move an item out of its stratum's
    balance, so the balance over all items is as exact as without strata. The same for the same ``rng`` state."""
    keys = list(strata) if strata is not None else [None] * len(stereotyped)
    given: list[str | None] = [None] * len(stereotyped)
    for key in sorted(set(keys), key=repr):
        mine = [n for n, k in enumerate(keys) if k == key]
        for n, g in zip(mine, _assign([stereotyped[n] for n in mine], [allowed[n] for n in mine], rng), strict=True):
            given[n] = g
    left = [n for n, g in enumerate(given) if g is None]
    if left and strata is not None:  # the rest over all items, moving placed ones out of their stratum if need be
        plan = _Assignment(Counter(stereotyped), allowed)
        for n, g in enumerate(given):
            if g is not None:
                plan.give(n, g)
        rng.shuffle(left)
        for n in left:
            plan.augment(n, set())
        given = plan.given
    return [g if g is not None else drawn[n] for n, g in enumerate(given)]


def _assign(quota: Sequence[str], allowed: Sequence[Sequence[str]], rng: random.Random) -> list[str | None]:
    """Item ``n`` one of ``allowed[n]``, each group at most as often as it is in ``quota``; None for an item no
    complete assignment could place."""
    plan = _Assignment(Counter(quota), allowed)
    order = list(range(len(allowed)))
    rng.shuffle(order)
    for n in order:  # greedy: a group with places left, chosen in proportion to how many it has left
        options = [g for g in allowed[n] if plan.free(g) > 0]
        if options:
            plan.give(n, rng.choices(options, [plan.free(g) for g in options])[0])
    for n in order:  # the rest by augmenting paths: earlier items move over to free a place
        if plan.given[n] is None:
            plan.augment(n, set())
    return plan.given


class _Assignment:
    """Items given groups, each group at most its quota."""

    def __init__(self, quota: Counter, allowed: Sequence[Sequence[str]]):
        self.quota, self.allowed = quota, allowed
        self.given: list[str | None] = [None] * len(allowed)
        self.holders: dict[str, list[int]] = {g: [] for g in quota}

    def free(self, group: str) -> int:
        return self.quota[group] - len(self.holders[group]) if group in self.quota else 0

    def give(self, n: int, group: str) -> None:
        self.given[n] = group
        self.holders[group].append(n)

    def take(self, n: int) -> None:
        group = self.given[n]
        if group is not None:
            self.holders[group].remove(n)
            self.given[n] = None

    def augment(self, n: int, seen: set[str]) -> bool:
        """Give item ``n`` a group, moving placed items along a path that ends at a group with a free place; False
        where there is none (depth first, each group entered once per search, so an item being moved never takes
        back the group it leaves)."""
        for group in self.allowed[n]:
            if group in seen or group not in self.quota:
                continue
            seen.add(group)
            if self.free(group) > 0:
                self.take(n)
                self.give(n, group)
                return True
            for m in list(self.holders[group]):
                if self.augment(m, seen):  # m moved elsewhere, so group has a place for n
                    self.take(n)
                    self.give(n, group)
                    return True
        return False


def balance_swaps(
    items: Sequence,
    options: Callable[[object], list],
    rng: random.Random,
    rounds: int,
    stratum: Callable[[object], Hashable] | None = None,
) -> list:
    """``items`` (one shape, one axis) with each of their ``rounds`` swaps re-chosen so that, round by round,
    every group stands in as often as it is the stereotyped group; ``options(item)`` lists the groups that may;
    ``stratum(item)``, where given, keys the items within which the balance is sought first."""
    by_name = {}
    allowed = []
    for item in items:
        groups = options(item)
        by_name |= {g.name: g for g in groups}
        allowed.append([g.name for g in groups])
    stereotyped = [item.group.name for item in items]
    strata = [stratum(item) for item in items] if stratum is not None else None
    swaps = [list(item.swaps) for item in items]
    for k in range(rounds):
        drawn = [s[k].name for s in swaps]
        for n, name in enumerate(balanced_choice(stereotyped, allowed, drawn, rng, strata)):
            swaps[n][k] = by_name.get(name, swaps[n][k])
    return [replace(item, swaps=tuple(s)) for item, s in zip(items, swaps, strict=True)]
