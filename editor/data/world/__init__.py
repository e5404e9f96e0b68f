"""The world-shaped yardstick's data, written for this project: groups of three axes (nationality, ethnicity,
religion) in several forms, their stereotypes, and natural sentence frames of three shapes (see README.md here).

Nationality stereotypes are SeeGULL's (a pair with 2 or more stereotype votes); ethnicity and religion
stereotypes are this folder's ``stereotypes.csv``. A nationality falls into the build / select / test fold of
SeeGULL's split (``editor.data.splits.fold_of`` of its SeeGULL name), so a fit that reads only build-fold groups
never sees a test-fold nationality in either yardstick. Ethnicities and religions are few (about 15 each), so a
hash alone could leave a fold with one group and no other to swap in: they are ranked by the same hash within
their axis and cut 40 / 20 / 40 (``MINOR_SHARES``), so the test fold holds five or six of each, enough for its
scores to be about more than two or three groups.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from editor.data.seegull import load_seegull, stereotypes
from editor.data.splits import Fold, fold_of
from editor.errors import EditorError

Axis = Literal["nationality", "ethnicity", "religion"]
AXES: tuple[Axis, ...] = ("nationality", "ethnicity", "religion")
Form = Literal["adjective", "plural", "phrase", "place"]
MINOR_SHARES = {"build": 0.4, "select": 0.2, "test": 0.4}  # the ethnicity and religion folds
FORMS: tuple[Form, ...] = ("adjective", "plural", "phrase", "place")


@dataclass(frozen=True)
class Group:
    axis: Axis
    name: str  # canonical id, e.g. "nigerian", "muslim"
    adjective: str  # "Nigerian" (a Nigerian nurse)
    plural: str  # "Nigerians"
    phrase: str  # "people from Nigeria"
    place: str  # nationality only: "Nigeria"
    identity: str  # what the fold hash reads: the SeeGULL name for a nationality, else the id
    stereotypes: tuple[str, ...]  # attributes the group is stereotyped with (SeeGULL: 2 or more votes)
    linked: frozenset[str]  # every attribute anyone linked to it (SeeGULL: any vote): what an anti-stereotype avoids
    fold: Fold = "build"

    def form(self, form: Form) -> str:
        return getattr(self, form)


@dataclass(frozen=True)
class Frame:
    """A sentence with one group slot and an ``{attribute}`` slot; ``number``: what the attribute describes."""

    text: str
    number: Literal["singular", "plural"]
    form: Form  # which group slot it has

    def fill(self, group: Group, attribute: str) -> str:
        return self.text.replace("{" + self.form + "}", group.form(self.form)).replace("{attribute}", attribute)

    def split(self, group: Group, attribute: str) -> tuple[str, str]:
        """(the words up to and including the group, the rest): the rest is what a minimal pair scores."""
        head, _, tail = self.text.partition("{" + self.form + "}")
        return head + group.form(self.form), tail.replace("{attribute}", attribute)


@dataclass(frozen=True)
class QuestionBank:
    scenes: tuple[str, ...]  # "{a} and {b} were ..."
    persons: tuple[str, ...]  # "a young {adjective} man"
    questions: tuple[str, ...]  # "Who was {attribute}?"
    answers: tuple[str, ...]  # "the {adjective} one"
    unknown: tuple[str, ...]  # "Can't be determined"


@dataclass(frozen=True)
class WorldData:
    groups: tuple[Group, ...]
    contexts: tuple[Frame, ...]  # shape (a): the attribute ends the text
    pairs: tuple[Frame, ...]  # shape (b): more words follow the attribute
    questions: QuestionBank
    unrelated: tuple[str, ...]  # attributes that describe objects, never people
    sources: dict[str, str] = field(default_factory=dict)

    def in_fold(self, fold: Fold, axis: Axis | None = None) -> list[Group]:
        return [g for g in self.groups if g.fold == fold and (axis is None or g.axis == axis)]


def _folder() -> Path:
    return Path(str(resources.files(__package__)))


def _frames(path: Path) -> tuple[Frame, ...]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    frames = []
    for n, row in enumerate(rows, start=1):
        text = str(row.get("text", "")) if isinstance(row, dict) else ""
        slots = [form for form in FORMS if "{" + form + "}" in text]
        if len(slots) != 1 or text.count("{attribute}") != 1 or row.get("number") not in ("singular", "plural"):
            raise EditorError(f"{path}: frame {n} needs one group slot, one {{attribute}} and a number; fix it")
        frames.append(Frame(text, row["number"], slots[0]))
    return tuple(frames)


def _folds(groups: list[Group]) -> list[Group]:
    """Each group with its fold: a nationality's SeeGULL fold; an ethnicity or religion by its rank of the same
    hash within its axis, cut at ``MINOR_SHARES``."""
    from dataclasses import replace

    from editor.data.splits import FOLDS, identity_hash

    out = []
    for axis in AXES:
        mine = [g for g in groups if g.axis == axis]
        if axis == "nationality":
            out += [replace(g, fold=fold_of(g.identity, "identity")) for g in mine]
            continue
        ranked = sorted(mine, key=lambda g: identity_hash(g.identity))
        edges, total = [], 0.0
        for fold in FOLDS:
            total += MINOR_SHARES[fold]
            edges.append((round(total * len(ranked)), fold))
        for rank, group in enumerate(ranked):
            out.append(replace(group, fold=next(f for edge, f in edges if rank < edge)))
    return out


@cache
def load_world(seegull: str | None = None) -> WorldData:
    """The packaged world data; nationality stereotypes from ``seegull`` (null: the packaged SeeGULL)."""
    folder = _folder()
    pairs = load_seegull(seegull)
    stereotyped: dict[str, list[str]] = {}
    anyone: dict[str, set[str]] = {}
    for pair in stereotypes(pairs):
        stereotyped.setdefault(pair.identity, []).append(pair.attribute)
    for pair in pairs:
        if pair.votes > 0:
            anyone.setdefault(pair.identity, set()).add(pair.attribute)
    with (folder / "stereotypes.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            key = f"{row['axis']}:{row['group']}"
            stereotyped.setdefault(key, []).append(row["attribute"].strip())
            anyone.setdefault(key, set()).add(row["attribute"].strip())
    groups = []
    with (folder / "groups.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            nationality = row["axis"] == "nationality"
            identity = row["seegull"].strip() if nationality else row["group"].strip()
            key = identity if nationality else f"{row['axis']}:{row['group']}"
            groups.append(
                Group(
                    row["axis"],  # type: ignore[arg-type]
                    row["group"].strip(),
                    row["adjective"].strip(),
                    row["plural"].strip(),
                    row["phrase"].strip(),
                    row["place"].strip(),
                    identity,
                    tuple(dict.fromkeys(stereotyped.get(key, []))),
                    frozenset(anyone.get(key, set())),
                )
            )
    bank = yaml.safe_load((folder / "questions.yaml").read_text(encoding="utf-8"))
    questions = QuestionBank(
        *(tuple(str(x) for x in bank[key]) for key in ("scenes", "persons", "questions", "answers", "unknown"))
    )
    unrelated = tuple(line.strip() for line in (folder / "unrelated.txt").read_text().splitlines() if line.strip())
    return WorldData(
        tuple(_folds(groups)), _frames(folder / "contexts.yaml"), _frames(folder / "pairs.yaml"), questions, unrelated
    )
