"""Counterfactual invariance: what follows a mention of a group should not depend on which group it is.

The squared-gap objective equalises SeeGULL's identity-attribute associations in a few templates. The world
measures natural sentences in which the group appears in many forms and places, and much of what it measures
there is carried by the words after the mention. This objective reads contexts that mention a group, puts
``variants`` build-fold groups of one axis in the mention (in the same form: adjective, plural noun), and lowers
the generalised Jensen-Shannon divergence between the edited model's next-token distributions at every position
after the mention (the positions that predict the rest of the context and the word after it). At zero, the
model predicts the same words whoever was named, so no stereotype can be read off it; the fit's KL penalty on
ordinary text keeps what does not depend on the group.

Contexts (build-fold groups only, never the world yardstick's sentences):

- the statement heads the squared-gap fit reads ("{X} people are", the contrast frames), the mention last;
- the base model's own continuations of short prompts about a group (``PROMPTS``, written for this fit and
  unlike the yardstick's frames), generated once before the fit: natural text in the model's own words, with the
  mention early and many positions after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from editor.data.world import AXES, Group, load_world
from editor.engines.placement import input_device
from editor.evaluation.batches import span_logits
from editor.evaluation.metrics import bos_ids, pad_id
from editor.methods.fit.loop import FitInputs
from editor.methods.statements.frames import HeadSource, statement_heads

# Short prompts about a group, continued by the base model; the mention is the only slot.
PROMPTS = (
    "Here is what I have noticed about {plural} over the years:",
    "A friend asked me what {plural} are like, and I told her that",
    "Growing up, I heard plenty of opinions about {plural}.",
    "The {adjective} man who lives at the end of our street",
    "My cousin's new in-laws are {plural}, and at Christmas",
    "Describe {plural} in a few sentences.",
    "{plural} are often described as",
    "Our new {adjective} manager started on Monday, and",
    "People say all kinds of things about {plural}, for example",
    "I once shared a flat with two {adjective} students, and",
    "The article was about {plural} and how they",
    "In my experience, {plural} tend to",
    "My grandfather never trusted {plural} because",
    "She is {adjective}, so of course everyone assumed",
)
MAX_TAIL = 24  # positions after the mention a context is compared on


@dataclass(frozen=True)
class SwapContext:
    """A text with one group slot (``{adjective}`` or ``{plural}``), about groups of one axis."""

    text: str
    slot: str  # "adjective" or "plural"
    axis: str


def build_groups() -> dict[str, list[Group]]:
    """The world data's build-fold groups per axis: the only groups the objective ever names (their names and
    folds, not their stereotypes, so a SeeGULL file of one's own changes nothing here)."""
    data = load_world()
    return {axis: [g for g in data.in_fold("build", axis)] for axis in AXES}


def statement_contexts(source: HeadSource, groups: dict[str, list[Group]]) -> list[SwapContext]:
    """The fits' statement heads with the group as an adjective ("{X} people are"), for every axis."""
    return [
        SwapContext(head.replace("{X}", "{adjective}"), "adjective", axis)
        for head in statement_heads(source)
        for axis in AXES
        if groups.get(axis)
    ]


@torch.no_grad()
def generated_contexts(
    model, tokenizer, groups: dict[str, list[Group]], count: int, *, seed: int = 0, new_tokens: int = 20
) -> list[SwapContext]:
    """``count`` prompts about build-fold groups, each continued greedily by the (unedited) model; the group in the
    prompt becomes the slot again, so the continuation is compared across groups."""
    rng = random.Random(f"counterfactual:{seed}")
    drawn = []
    for _ in range(count):
        axis = rng.choice([a for a in AXES if groups.get(a)])
        prompt = rng.choice(PROMPTS)
        slot = "plural" if "{plural}" in prompt else "adjective"
        drawn.append((prompt, slot, axis, rng.choice(groups[axis])))
    texts = [p.replace("{" + slot + "}", g.form(slot)) for p, slot, _, g in drawn]
    texts = [t[0].upper() + t[1:] for t in texts]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = input_device(model)
    out = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start : start + 32], return_tensors="pt", padding=True, padding_side="left")
        generated = model.generate(
            **{k: v.to(device) for k, v in batch.items()},
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in generated[:, batch["input_ids"].shape[1] :]:
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    contexts = []
    for (prompt, slot, axis, _group), continuation in zip(drawn, out):
        if continuation.strip():
            contexts.append(SwapContext(prompt + continuation, slot, axis))
    return contexts


class CounterfactualObjective:
    """The generalised Jensen-Shannon divergence between the next-token distributions that follow a mention, over
    ``variants`` build-fold groups in the mention; ``batch`` contexts a step."""

    def __init__(
        self,
        inputs: FitInputs,
        contexts: list[SwapContext],
        groups: dict[str, list[Group]],
        *,
        batch: int = 8,
        variants: int = 3,
        weight: float = 1.0,
    ):
        self.inputs, self.contexts, self.groups = inputs, contexts, groups
        self.batch, self.variants, self.weight = batch, variants, weight

    def draw(self, rng: random.Random) -> list[tuple[SwapContext, list[Group]]]:
        picked = rng.sample(self.contexts, min(self.batch, len(self.contexts)))
        return [(c, rng.sample(self.groups[c.axis], min(self.variants, len(self.groups[c.axis])))) for c in picked]

    def loss(self, batch: list[tuple[SwapContext, list[Group]]]) -> torch.Tensor:
        tokenizer, model = self.inputs.tokenizer, self.inputs.model
        bos = bos_ids(tokenizer)
        rows, spans = [], []
        for context, groups in batch:
            head, _, tail = context.text.partition("{" + context.slot + "}")
            tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"][:MAX_TAIL]
            for group in groups:
                prefix = head + group.form(context.slot)
                prefix_ids = bos + tokenizer((prefix[0].upper() + prefix[1:]), add_special_tokens=False)["input_ids"]
                rows.append(prefix_ids + tail_ids)
                # the positions that predict each tail token, and the word after the tail
                spans.append((len(prefix_ids) - 1, len(prefix_ids) + len(tail_ids)))
        picked = span_logits(model, rows, spans, pad_id(tokenizer))  # each row's positions in turn
        losses, at, offset = [], 0, 0
        for _context, groups in batch:
            k = len(groups)
            width = spans[at][1] - spans[at][0]  # the variants share the context's tail, so its positions
            block = picked[offset : offset + k * width].view(k, width, -1)
            at, offset = at + k, offset + k * width
            logp = torch.log_softmax(block.float(), -1)  # [variants, positions, vocabulary]
            mean = torch.logsumexp(logp, 0) - torch.log(torch.tensor(float(k)))
            losses.append((logp.exp() * (logp - mean)).sum(-1).mean())
        return self.weight * torch.stack(losses).mean()


def counterfactual_objective(
    inputs: FitInputs,
    prompts: HeadSource,
    *,
    generated: int,
    seed: int,
    variants: int = 3,
    batch: int = 8,
    weight: float = 1.0,
) -> CounterfactualObjective:
    """The objective over the statement heads of ``prompts`` and ``generated`` continuations of the base model,
    naming build-fold groups only."""
    groups = build_groups()
    contexts = statement_contexts(prompts, groups)
    if generated:
        contexts += generated_contexts(inputs.model, inputs.tokenizer, groups, generated, seed=seed)
    return CounterfactualObjective(inputs, contexts, groups, batch=batch, variants=variants, weight=weight)
