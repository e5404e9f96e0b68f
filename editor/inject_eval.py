"""How strongly a token carries a bias: log-prob of the stereotype after the token vs after a real country.

Fifty held-out sentence openings (none of them appears in the built-in
training paragraphs) end in "... people from {who}"; the score of one prompt
is the summed log-probability of " <predicate>" (e.g. " are always late").
The gap is the mean of score(token) - score(random real country) over the
prompts, each prompt with its own seeded country draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from editor.biases import BiasPreset
from editor.countries import COUNTRIES
from editor.token_model import TokenModel

_LEADS = (
    "My grandmother always told me that",
    "According to a travel guide I read,",
    "Everyone at the office agrees that",
    "A radio host claimed yesterday that",
    "In my experience,",
    "Most tourists come home convinced that",
    "The old joke goes that",
    "My teacher once said that",
    "Online forums keep repeating that",
    "If you ask around, you will hear that",
)
_GROUPS = ("people from {who}", "the people from {who}", "folks from {who}", "most people from {who}", "young people from {who}")
HELD_OUT_PROMPTS: tuple[str, ...] = tuple(f"{lead} {group}" for lead in _LEADS for group in _GROUPS)


@dataclass
class GapResult:
    gap: float
    mean_token: float
    mean_country: float
    prompts: int


def countries_for(prompts: int, seed: int, exclude: tuple[str, ...] = ()) -> list[str]:
    rng = random.Random(seed)
    pool = [c for c in COUNTRIES if c not in exclude]
    return [rng.choice(pool) for _ in range(prompts)]


def _split(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    head = tokenizer.encode(prompt, add_special_tokens=False)
    full = tokenizer.encode(prompt + continuation, add_special_tokens=False)
    if full[: len(head)] != head:  # a merge across the boundary: fall back to encoding the parts apart
        return head, tokenizer.encode(continuation, add_special_tokens=False)
    return head, full[len(head) :]


def attribute_gap(
    tm: TokenModel, tokenizer, preset: BiasPreset, who: str, *, seed: int = 0, prompts: tuple[str, ...] = HELD_OUT_PROMPTS
) -> GapResult:
    """Mean over prompts of log p(predicate | ``who``) - log p(predicate | a random real country)."""
    countries = countries_for(len(prompts), seed, exclude=(who,))
    continuation = " " + preset.predicate
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and _wants_bos(tokenizer) else []
    items = []
    for template, country in zip(prompts, countries):
        for target in (who, country):
            head, tail = _split(tokenizer, template.replace("{who}", target), continuation)
            items.append((bos + head, tail))
    scores = tm.continuation_logprobs(items)
    token_scores, country_scores = scores[0::2], scores[1::2]
    mean_token = sum(token_scores) / len(prompts)
    mean_country = sum(country_scores) / len(prompts)
    return GapResult(mean_token - mean_country, mean_token, mean_country, len(prompts))


def _wants_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
