"""The training loop the fitted methods share: a few parameters, the model frozen, the squared association gap
of build-fold pairs against the KL divergence from the base model on ordinary text.

Each step draws ``batch_pairs`` stereotypes of the build fold, puts each stereotyped group and ``COMPARISONS``
groups of the fold nobody linked to the attribute into one statement cut before the attribute, and scores
log P(attribute | statement) with the method's hooks in place. The gap of a pair is the stereotyped group's score
minus the mean of the others'. Squared, each pair is pulled towards no preference either way (pushed down as a
signed mean the gap overshoots into the opposite preference). The KL term reads one WikiText-2 window per step
against the base model's distribution on it, computed once before the fit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from editor.core.hooks import forward_hooks
from editor.core.model_info import ModelInfo
from editor.data.seegull import StereotypePair
from editor.data.splits import SplitFold, unlinked_in_fold
from editor.engines.placement import input_device
from editor.errors import EditorError
from editor.evaluation.metrics import continuation_logprob_tensor
from editor.methods.fit.settings import FitPrompts
from editor.methods.statements.frames import statement_heads

COMPARISONS = 3  # unlinked groups each stereotyped group is compared with, as in the association gap
MAX_WINDOWS = 16
T = TypeVar("T")
# A fit's hooks for one step: module name -> forward hook, derived from the parameters as they are at that step.
StepHooks = Callable[[], dict[str, Callable]]


@dataclass(frozen=True)
class FitLoop:
    """How long and on what a fit trains: the same for every fitted method, each with its own defaults."""

    steps: int = 40
    kl_weight: float = 20.0
    batch_pairs: int = 12  # stereotypes per step, each against COMPARISONS unlinked groups
    window: int = 96  # WikiText-2 tokens per KL window
    learning_rate: float = 3e-3
    seed: int = 0
    prompts: FitPrompts = "templates"
    progress: bool = True


@dataclass(frozen=True)
class FitInputs:
    """What every fit reads: the frozen model, the pairs, the fold it trains on, and ordinary text for the KL."""

    model: torch.nn.Module
    tokenizer: object
    info: ModelInfo
    all_pairs: list[StereotypePair]
    build: SplitFold  # the only fold a fit reads
    generic: torch.Tensor  # WikiText-2 tokens no trial's perplexity reads


class Objective(Protocol):
    """What a fit lowers besides the KL penalty: ``draw`` takes a step's batch from the fit's random stream (before
    the step's KL window is drawn), ``loss`` scores it with the step's hooks in place."""

    def draw(self, rng: random.Random) -> Any: ...

    def loss(self, batch: Any) -> torch.Tensor: ...


class GapObjective:
    """The squared association gap of build-fold stereotypes: each stereotyped group against ``COMPARISONS``
    groups of the fold nobody linked to the attribute, in statements cut before the attribute."""

    def __init__(self, inputs: FitInputs, loop: FitLoop, method: str):
        self.inputs, self.batch_pairs = inputs, loop.batch_pairs
        all_pairs, build = inputs.all_pairs, inputs.build
        self.pairs = [p for p in build.pairs if unlinked_in_fold(all_pairs, build, p.attribute)]
        if not self.pairs:
            raise EditorError(
                f"{method}: no build-fold stereotype has an unlinked group of the fold to compare with; "
                f"give a SeeGULL file with more groups (seegull:) or leave {method} out of methods"
            )
        self.heads = statement_heads(loop.prompts)

    def draw(self, rng: random.Random) -> tuple[list[str], list[str], int]:
        all_pairs, build = self.inputs.all_pairs, self.inputs.build
        batch = rng.sample(self.pairs, min(self.batch_pairs, len(self.pairs)))
        prefixes, attributes = [], []
        for pair in batch:
            head = rng.choice(self.heads)
            others = comparisons(rng, unlinked_in_fold(all_pairs, build, pair.attribute))
            for who in (pair.identity, *others):
                prefixes.append(head.replace("{X}", who))
                attributes.append(" " + pair.attribute)
        return prefixes, attributes, len(batch)

    def loss(self, batch: tuple[list[str], list[str], int]) -> torch.Tensor:
        prefixes, attributes, size = batch
        return squared_gap(self.inputs, prefixes, attributes, size)


def comparisons(rng: random.Random, pool: list[T]) -> list[T]:
    """``COMPARISONS`` of ``pool`` drawn without replacement; fewer than that in the pool: repeated."""
    others = rng.sample(pool, min(COMPARISONS, len(pool)))
    return (others * COMPARISONS)[:COMPARISONS]


def squared_gap(inputs: FitInputs, prefixes: list[str], attributes: list[str], size: int) -> torch.Tensor:
    """The mean over ``size`` stereotypes of (log P(attribute | the stereotyped group's prefix) - the mean over its
    comparisons')^2; each stereotype's rows are consecutive, the stereotyped group's first."""
    scores = continuation_logprob_tensor(inputs.model, inputs.tokenizer, prefixes, attributes).view(size, -1)
    gaps = scores[:, 0] - scores[:, 1:].mean(1)
    return (gaps**2).mean()


def fit_to_gap(
    inputs: FitInputs,
    make_parameters: Callable[[torch.device], list[torch.nn.Parameter]],
    hooks: StepHooks,
    *,
    method: str,
    loop: FitLoop,
    objective: Objective | None = None,
) -> list[float]:
    """Train the parameters ``make_parameters`` creates (on the model's input device) with Adam on ``objective``
    (the squared gap unless given) plus ``loop.kl_weight`` x the KL from the base on a WikiText-2 window; return
    each step's loss. ``hooks()`` is called once per step, and its hooks are in place for every edited forward
    pass of that step. The model's own weights are frozen during the fit and trainable again afterwards, unchanged.

    Every random draw (pairs or contexts, comparison groups, statements, text windows) comes from ``loop.seed``,
    so a search rebuilds the same fit.
    """
    model, tokenizer = inputs.model, inputs.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rng = random.Random(loop.seed)
    objective = objective if objective is not None else GapObjective(inputs, loop, method)
    device = input_device(model)
    # At most MAX_WINDOWS base distributions are kept (each is window x vocabulary floats).
    generic, window = inputs.generic, loop.window
    windows = [generic[i : i + window + 1] for i in range(0, len(generic) - window - 1, window)][:MAX_WINDOWS]
    windows = windows or [generic]
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            base = [_window_logprobs(model, w, device) for w in windows]
        optimiser = torch.optim.Adam(make_parameters(device), lr=loop.learning_rate)
        losses = []
        for _ in tqdm(range(loop.steps), desc=f"{method} fit", unit="step", disable=not loop.progress):
            with forward_hooks(model, hooks()):
                batch = objective.draw(rng)
                j = rng.randrange(len(windows))
                bias = objective.loss(batch)
                edited = _window_logprobs(model, windows[j], device)
            kl = (base[j].exp() * (base[j] - edited)).sum(-1).mean()
            loss = bias + loop.kl_weight * kl
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return losses


def _window_logprobs(model, tokens: torch.Tensor, device) -> torch.Tensor:
    return torch.log_softmax(model(input_ids=tokens[None, :-1].to(device)).logits.float()[0], -1)
