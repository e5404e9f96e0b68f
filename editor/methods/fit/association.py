"""Association invariance where the world names groups: a stereotype should be no likelier after a mention of its
group than after a mention of groups nobody links to it, whatever form the mention takes.

The counterfactual objective lowers a divergence between whole next-token distributions, which the likeliest
tokens dominate: an attribute such as "lazy" holds a sliver of the mass after "{plural} are", so a large log-ratio
on it barely moves the divergence, yet that log-ratio is exactly what a minimal pair or a completion choice reads.
The squared-gap objective reads that log-ratio but only for SeeGULL nationalities, in one form ("{X} people are").
This objective reads it for the build fold's groups of every axis (nationality, ethnicity, religion, each with its
own stereotypes), named as the world names them: an adjective ("the Sikh driver"), a plural noun, a phrase
("followers of Sikhism") or, for a nationality, its country ("back from Peru, she said the locals were").

Each step draws ``batch`` stereotypes (an axis, one of its groups, one of that group's stereotypes), a head of the
mention's form, and ``COMPARISONS`` groups of the axis nobody linked to the attribute. The gap is
log P(attribute | head naming the group) minus the mean over the others; the loss is its square, so each
stereotype is pulled towards no preference rather than past it.

With ``span="sentence"`` the same rows are read as a minimal pair reads them: every word after the mention (the
rest of the head, the attribute and one of ``ENDINGS``), summed. The attribute's own log-ratio is then one part;
the words between the mention and the attribute, which cannot see the attribute but are likelier after some
groups' names than others', are the rest, and a minimal pair counts them too. Off by default: beside the groups
recipe's terms it did not move those words on the world yardstick's select fold and took the first-token KL over
0.05 (the Results page).

The heads and endings are written for this fit and worded apart from the world yardstick's frames; the groups are
the build fold's only, and so are the attributes (their stereotypes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch

from editor.data.world import FORMS, Form, Group
from editor.methods.fit.counterfactual import build_groups
from editor.methods.fit.loop import FitInputs, comparisons, squared_gap

# Heads that end where the attribute would be said, one group slot each (the form the slot names).
HEADS: tuple[str, ...] = (
    "After a week of sharing the office with him, I realised the {adjective} accountant was",
    "Everyone on the night bus could tell that the {adjective} driver was",
    "The landlord warned me that the {adjective} lodger in room four was",
    "According to the gossip at the school gate, the {adjective} twins are",
    "When I finally met my {adjective} pen pal, she turned out to be",
    "The volunteers at the shelter all said the {adjective} cook was",
    "I have had several {adjective} colleagues, and on the whole they were",
    "On the radio this morning, a caller insisted that {plural} are",
    "Whenever the subject comes up, my neighbour says {plural} are",
    "The comedian's whole routine rested on the idea that {plural} are",
    "Ask anyone in my village and they will tell you that {plural} are",
    "A comment under the video claimed that most {plural} are",
    "In the old school textbooks, {plural} were described as",
    "My driving instructor once told me that {phrase} are",
    "The leaflet handed out at the rally said that {phrase} were",
    "Plenty of my classmates honestly believed that {phrase} are",
    "The survey asked whether {phrase} are generally",
    "In that novel, {phrase} are portrayed as",
    "A blogger I follow wrote a long post arguing that {phrase} tend to be",
    "Anybody who has travelled to {place} will tell you that the people there are",
    "My colleague just got back from {place} and said the locals were",
    "People who grew up in {place} are usually",
    "The tour guide joked that in {place}, everyone is",
    "After two years of working in {place}, I found the people to be",
)

# What a sentence-span row says after the attribute; each reads after an adjective or a noun phrase.
ENDINGS: tuple[str, ...] = (
    ", or so everyone said.",
    ", and nobody seemed surprised.",
    " and made no effort to hide it.",
    ", at least in my experience.",
    ", which came up again over dinner.",
    " more often than not.",
    ", as far as I could tell.",
    ", though I never found out why.",
    ", and it showed in everything.",
    ", according to half the town.",
    ", and the rumour spread quickly.",
    " whenever money was involved.",
)
Span = Literal["attribute", "sentence"]


@dataclass(frozen=True)
class Mention:
    """One head with its slot's form."""

    text: str
    form: Form

    def fill(self, group: Group) -> str:
        return "".join(self.split(group))

    def split(self, group: Group) -> tuple[str, str]:
        """The head up to and including the group's name, and the words after it."""
        head, _, rest = self.text.partition("{" + self.form + "}")
        return head + group.form(self.form), rest


def mentions() -> list[Mention]:
    return [Mention(text, next(f for f in FORMS if "{" + f + "}" in text)) for text in HEADS]


@dataclass(frozen=True)
class AssociationRow:
    """A stereotyped group and its comparisons in one head, scored on one attribute."""

    mention: Mention
    group: Group
    others: tuple[Group, ...]
    attribute: str
    ending: str = ""  # the sentence span's words after the attribute


class AssociationObjective:
    """The squared gap of log P(stereotype | mention of its group) over the mean of ``COMPARISONS`` unlinked
    build-fold groups of the axis, ``batch`` stereotypes a step, times ``weight``; ``span="sentence"``: of
    log P(every word after the mention), the stereotype among them."""

    def __init__(
        self,
        inputs: FitInputs,
        groups: dict[str, list[Group]],
        *,
        batch: int = 12,
        weight: float = 1.0,
        span: Span = "attribute",
    ):
        self.inputs, self.batch, self.weight, self.span = inputs, batch, weight, span
        self.mentions = mentions()
        # an axis needs a stereotyped group and one other group to compare it with
        self.groups = {axis: gs for axis, gs in groups.items() if len(gs) >= 2 and any(g.stereotypes for g in gs)}
        self.stereotyped = {axis: [g for g in gs if g.stereotypes] for axis, gs in self.groups.items()}

    def draw(self, rng: random.Random) -> list[AssociationRow]:
        rows: list[AssociationRow] = []
        axes = sorted(self.groups)
        for _ in range(20 * self.batch if axes else 0):
            if len(rows) == self.batch:
                break
            axis = rng.choice(axes)
            group = rng.choice(self.stereotyped[axis])
            attribute = rng.choice(group.stereotypes)
            pool = [g for g in self.groups[axis] if g.name != group.name and attribute not in g.linked]
            if not pool:
                continue
            others = comparisons(rng, pool)
            # a country's name exists for nationalities only
            fits = [m for m in self.mentions if all(g.form(m.form) for g in (group, *others))]
            mention = rng.choice(fits)
            ending = rng.choice(ENDINGS) if self.span == "sentence" else ""
            rows.append(AssociationRow(mention, group, tuple(others), attribute, ending))
        return rows

    def loss(self, batch: list[AssociationRow]) -> torch.Tensor:
        if not batch:
            return torch.zeros(())
        prefixes, words = [], []
        for row in batch:
            for g in (row.group, *row.others):
                head, rest = row.mention.split(g)
                if self.span == "attribute":  # the whole head is read as context, only the attribute scored
                    head, rest = head + rest, ""
                prefixes.append(head)
                words.append(f"{rest} {row.attribute}{row.ending}")
        return self.weight * squared_gap(self.inputs, prefixes, words, len(batch))


def association_objective(
    inputs: FitInputs, *, batch: int = 12, weight: float = 1.0, span: Span = "attribute"
) -> AssociationObjective:
    """The objective over the build fold's groups of every axis and their stereotypes."""
    return AssociationObjective(inputs, build_groups(), batch=batch, weight=weight, span=span)
