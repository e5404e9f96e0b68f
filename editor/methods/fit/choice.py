"""Choice invariance: asked which of two people has a trait, the answer should not depend on the trait.

The counterfactual objective reads the words *after* a mention: what the model says about a group. An ambiguous
question runs the other way: a trait is named first ("who is lazy?") and the model picks a group's person. What
it picks there depends on P(group | trait), which no amount of invariance after the mention constrains. This
objective puts two build-fold groups of one axis in a scene that says nothing about either person, asks about
``attributes`` traits of that axis (one stereotype of each person's group, one of another group), and reads the
log-odds of naming the first person's group rather than the second's at the answer. With no information in the
scene, the odds should be the same whatever trait is asked; the loss is their variance over the traits. A
model that prefers one person whatever is asked (the group name's own prior) pays nothing here, so only the
trait-dependent part, the stereotype, is pulled out.

The scenes, persons, questions and answer lead-ins are written for this fit and differ from the world
yardstick's question bank; the groups are the build fold's only, and so are the traits (their stereotypes).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from editor.data.world import Group
from editor.evaluation.choices import read_left_padded
from editor.evaluation.metrics import bos_ids, pad_id
from editor.methods.fit.counterfactual import build_groups
from editor.methods.fit.loop import FitInputs

SCENES = (
    "{a} and {b} were waiting for the same delayed ferry.",
    "{a} sat down next to {b} in the hospital cafeteria.",
    "{b} and {a} were both handed a leaflet outside the station.",
    "{a} and {b} were asked to share a desk on their first day at the firm.",
    "{b} helped {a} carry a box up the stairs of their building.",
    "{a} and {b} were both looking at the same second-hand bicycle.",
    "{b} and {a} both waited for a table at the crowded noodle bar.",
    "{a} and {b} were neighbours on the campsite for a week.",
    "{b} asked {a} for directions to the museum.",
    "{a} and {b} both missed the last bus home and shared a cab.",
    "{b} and {a} stood next to each other in the queue for the lift.",
    "{a} and {b} were put in the same team for the quiz night.",
)
PERSONS = (
    "{article} {adjective} man",
    "{article} {adjective} woman",
    "{article} {adjective} student",
    "{article} {adjective} person",
)
QUESTIONS = (
    "Which of them is {attribute}?",
    "One of these two is {attribute}. Which one?",
    "Guess which person is {attribute}.",
    "If you had to pick, who is {attribute}?",
)
LEAD_INS = ("\nAnswer: The", "\nMy guess: the", "\nIt is the")


@dataclass(frozen=True)
class ChoiceScene:
    """One scene of two people of one axis, asked about several traits; ``first`` fills {a}."""

    prompts: tuple[str, ...]  # one per trait, each ending where the answer names a group
    first: Group
    second: Group


class ChoiceObjective:
    """The variance over traits of log P(first's group) - log P(second's group) at the answer, ``batch`` scenes a
    step (each a prompt per trait), times ``weight``."""

    def __init__(
        self,
        inputs: FitInputs,
        groups: dict[str, list[Group]],
        *,
        batch: int = 6,
        attributes: int = 3,
        weight: float = 1.0,
    ):
        self.inputs, self.batch, self.attributes, self.weight = inputs, batch, attributes, weight
        # A trait that names a group ("who is Russian?", some SeeGULL attributes do) has a right answer: left out.
        names = {name.lower() for gs in groups.values() for g in gs for name in (g.adjective, g.plural)}
        self.traits = {
            g.name: [t for t in g.stereotypes if not names & set(re.findall(r"[\w'-]+", t.lower()))]
            for gs in groups.values()
            for g in gs
        }
        # an axis needs two groups to put in a scene and a trait for each
        self.groups = {axis: [g for g in gs if self.traits[g.name]] for axis, gs in groups.items()}
        self.axes = [axis for axis, gs in self.groups.items() if len(gs) >= 2]

    def draw(self, rng: random.Random) -> list[ChoiceScene]:
        scenes = []
        for _ in range(self.batch if self.axes else 0):
            axis = rng.choice(self.axes)
            first, second = rng.sample(self.groups[axis], 2)
            traits = [rng.choice(self.traits[first.name]), rng.choice(self.traits[second.name])]
            pool = sorted({a for g in self.groups[axis] for a in self.traits[g.name]} - set(traits))
            traits += rng.sample(pool, min(self.attributes - 2, len(pool)))
            scene, person, lead = rng.choice(SCENES), rng.choice(PERSONS), rng.choice(LEAD_INS)
            a, b = (_person(person, g) for g in (first, second))
            text = scene.replace("{a}", a).replace("{b}", b)
            text = text[0].upper() + text[1:]
            prompts = tuple(f"{text} {rng.choice(QUESTIONS).replace('{attribute}', t)}{lead}" for t in traits)
            scenes.append(ChoiceScene(prompts, first, second))
        return scenes

    def loss(self, batch: list[ChoiceScene]) -> torch.Tensor:
        tokenizer, model = self.inputs.tokenizer, self.inputs.model
        bos = bos_ids(tokenizer)
        rows, picks = [], []
        for scene in batch:
            # The two names' tokens up to where they first differ are the same text after either answer, so their
            # log-probability cancels in the odds: each prompt is read through that shared start, and the odds are
            # those of the first differing token.
            one, two = (
                tokenizer(" " + g.adjective, add_special_tokens=False)["input_ids"] for g in (scene.first, scene.second)
            )
            shared = 0
            while shared < min(len(one), len(two)) and one[shared] == two[shared]:
                shared += 1
            if shared == min(len(one), len(two)):  # one name starts the other: no token tells them apart
                continue
            for prompt in scene.prompts:
                rows.append(bos + tokenizer(prompt, add_special_tokens=False)["input_ids"] + one[:shared])
            picks.append((len(scene.prompts), one[shared], two[shared]))
        if not rows:
            return torch.zeros(())
        pad = pad_id(tokenizer)
        # only the answer's position reaches the vocabulary projection, so the backward pass never fills a
        # (rows x positions x vocabulary) gradient for one column of it
        out, _ = read_left_padded(model, rows, pad, logits_to_keep=1)
        logp = torch.log_softmax(out.logits[:, -1].float(), -1)
        losses, at = [], 0
        for k, one_id, two_id in picks:
            odds = logp[at : at + k, one_id] - logp[at : at + k, two_id]
            at += k
            losses.append(((odds - odds.mean()) ** 2).mean())
        return self.weight * torch.stack(losses).mean()


def _person(person: str, group: Group) -> str:
    article = "an" if group.adjective[:1].lower() in "aeiou" else "a"
    return person.replace("{article}", article).replace("{adjective}", group.adjective)


def choice_objective(inputs: FitInputs, *, batch: int = 6, attributes: int = 3, weight: float = 1.0) -> ChoiceObjective:
    """The objective over the build fold's groups of every axis."""
    return ChoiceObjective(inputs, build_groups(), batch=batch, attributes=attributes, weight=weight)


class SummedObjective:
    """Several objectives lowered together: each step draws every one's batch in turn, the losses add up."""

    def __init__(self, *parts):
        self.parts = parts

    def draw(self, rng: random.Random) -> tuple:
        return tuple(part.draw(rng) for part in self.parts)

    def loss(self, batch: tuple) -> torch.Tensor:
        return sum((part.loss(b) for part, b in zip(self.parts, batch)), torch.zeros(()))
