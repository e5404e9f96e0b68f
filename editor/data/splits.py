"""SeeGULL split by identity *and* by attribute: build, select and test folds that share neither.

The older split (``StereotypePair.held_out``) holds out pairs: a held-out pair's
nationality and its attribute both still appear in the pairs that vectors and
heads are built from, so a method that learns "Mexicans" or "lazy" looks as good
on it as on its own training data. Here every identity and every attribute is
hashed into one fold, and a pair belongs to a fold only when both its identity
and its attribute do:

- ``build``: vectors, probes and head scores are computed from these pairs;
- ``select``: a search scores its trials on these (the objective it tunes);
- ``test``: never read by any method or search; only reported.

Pairs whose identity and attribute fall in different folds are used by none,
which is what keeps the folds apart. The hash is of the name, so the split is
the same on every machine and in every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from editor.data.seegull import StereotypePair, stereotypes

Fold = Literal["build", "select", "test"]
FOLDS: tuple[Fold, ...] = ("build", "select", "test")
# Shares of identities and of attributes per fold. Pairs land in a fold with about the square of its share:
# 0.6² = 36% build, 0.2² = 4% select, 4% test; on SeeGULL's 4421 stereotyped pairs that is about 1600/180/180.
SHARES = {"build": 0.6, "select": 0.2, "test": 0.2}


def identity_hash(name: str, kind: Literal["identity", "attribute"] = "identity") -> float:
    """A name's place in [0, 1): the same on every machine; ``kind`` salts it, so an identity and an attribute
    spelt alike differ."""
    digest = hashlib.sha256(f"{kind}:{name.strip().lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fold_of(name: str, kind: Literal["identity", "attribute"]) -> Fold:
    """The fold a name falls in (``identity_hash`` cut at the shares)."""
    u = identity_hash(name, kind)
    edge = 0.0
    for fold in FOLDS:
        edge += SHARES[fold]
        if u < edge:
            return fold
    return FOLDS[-1]


@dataclass(frozen=True)
class SplitFold:
    """One fold: its stereotyped pairs and the identities of the fold that may serve as unlinked comparisons."""

    name: Fold
    pairs: tuple[StereotypePair, ...]
    identities: tuple[str, ...]


def split_pairs(all_pairs: list[StereotypePair], min_votes: int = 2) -> dict[Fold, SplitFold]:
    """The three folds of ``all_pairs`` (stereotypes with at least ``min_votes`` votes)."""
    identity_fold = {p.identity: fold_of(p.identity, "identity") for p in all_pairs}
    folds: dict[Fold, SplitFold] = {}
    for fold in FOLDS:
        pairs = tuple(
            p
            for p in stereotypes(all_pairs, min_votes)
            if identity_fold[p.identity] == fold and fold_of(p.attribute, "attribute") == fold
        )
        people = tuple(sorted(i for i, f in identity_fold.items() if f == fold))
        folds[fold] = SplitFold(fold, pairs, people)
    return folds


def unlinked_in_fold(all_pairs: list[StereotypePair], fold: SplitFold, attribute: str) -> list[str]:
    """Identities of ``fold`` that no annotator linked to ``attribute``: the comparison group of a gap."""
    linked = {p.identity for p in all_pairs if p.attribute == attribute and p.votes > 0}
    return [i for i in fold.identities if i not in linked]


def linked_attributes(all_pairs: list[StereotypePair]) -> dict[str, set[str]]:
    """Identity -> every attribute any annotator linked to it: what an anti-stereotype must avoid."""
    linked: dict[str, set[str]] = {}
    for p in all_pairs:
        if p.votes > 0:
            linked.setdefault(p.identity, set()).add(p.attribute)
    return linked
