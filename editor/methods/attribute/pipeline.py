"""BiasScope end to end: contrastive pairs -> head attribution over seeds -> damage-aware k sweep -> plan.

The head score is contrastive by default: a head's direct effect on
``logit(y_b) - logit(y_u)`` on the question about the target, minus its
effect on the same question about another country, so heads that favour the
stereotyped answer whoever is asked about cancel out. Each seed draws other
comparison countries and a random 80% of the questions; the robust set for a
given k is the heads that are in the top k (with a positive score) of every
seed. The k sweep (``ksweep``) removes each robust set with run-time hooks,
zeroed, mean-ablated or scaled, and measures the *stereotype logit gap* on
held-out pairs about the real target country (the mean of
``[logit(y_b) - logit(y_u)]`` for the target minus the same for other
countries) and the damage (WikiText-2 perplexity, first-token KL, concept
retention). The chosen point lowers the gap most within the damage budget
(``removal.choose_point``); the saturation k, the smallest k that reaches
90% of the largest drop of the first removal's curve, is reported beside it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editor.core.model_info import ModelInfo
from editor.core.prefix_cache import PrefixCache
from editor.data import wikitext_txt
from editor.data.biases import BiasPreset, preset_questions
from editor.edits import ZeroHeads
from editor.engines.placement import input_device
from editor.errors import EditorError
from editor.evaluation.batches import left_padded
from editor.evaluation.prompts import concept_probes
from editor.methods.attribute.head_scores import attribute_batch
from editor.methods.attribute.ksweep import DamageMeter, SweepInputs, sweep, wikitext_tail
from editor.methods.attribute.pairs import (
    ContrastivePair,
    build_pairs,
    generate_questions_openai,
    load_pairs,
)
from editor.methods.attribute.ranking import robust_heads
from editor.methods.attribute.removal import KPoint, Removal, choose_point, head_means, removals_for, saturation_k
from editor.methods.attribute.settings import AttributeSettings


class PromptEncoder:
    """Chat-formats questions (when the tokenizer has a template) and left-pads them, so the answer comes next."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def text(self, prompt: str) -> str:
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"Question: {prompt}\nAnswer:"

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [
            self.tokenizer(self.text(p), add_special_tokens=not self.tokenizer.chat_template)["input_ids"]
            for p in prompts
        ]
        return left_padded(rows, self.tokenizer.pad_token_id)

    def first_token(self, answer: str) -> int:
        """The token an answer starts with at the beginning of the reply (the paper fixes it per bias)."""
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise EditorError(f"answer {answer!r} tokenizes to nothing; choose a real word")
        return ids[0]


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Effects:
    """Direct effects on logit(y_b) - logit(y_u), one row per prompt."""

    heads: np.ndarray  # [prompts, layers, heads]
    experts: np.ndarray | None  # [prompts, layers, experts]; None for a dense model


def head_effects(
    model, info: ModelInfo, encoder: PromptEncoder, prompts: list[str], yb: int, yu: int, batch_size: int
) -> Effects:
    """The heads' (and a mixture of experts' experts') direct effects on every prompt."""
    heads, experts = [], []
    for chunk in _batches(prompts, batch_size):
        ids, mask = encoder.encode(chunk)
        n = len(chunk)
        result = attribute_batch(model, info, ids, mask, torch.full((n,), yb), torch.full((n,), yu))
        heads.append(result.heads)
        if result.experts is not None:
            experts.append(result.experts)
    return Effects(np.concatenate(heads), np.concatenate(experts) if experts else None)


@torch.no_grad()
def logit_gaps(model, encoder: PromptEncoder, prompts: list[str], yb: int, yu: int, batch_size: int) -> np.ndarray:
    device = input_device(model)
    gaps = []
    for chunk in _batches(prompts, batch_size):
        ids, mask = encoder.encode(chunk)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            logits_to_keep=1,
        ).logits[:, -1]
        gaps.append((logits[:, yb] - logits[:, yu]).float().cpu().numpy())
    return np.concatenate(gaps)


def stereotype_gap(
    model, encoder: PromptEncoder, pairs: list[ContrastivePair], yb: int, yu: int, batch_size: int
) -> float:
    """Mean [logit(y_b) - logit(y_u)] about the target minus the same about other countries."""
    target = logit_gaps(model, encoder, [p.biased_prompt for p in pairs], yb, yu, batch_size)
    other = logit_gaps(model, encoder, [p.unbiased_prompt for p in pairs], yb, yu, batch_size)
    return float((target - other).mean())


def heads_to_edits(heads: Sequence[tuple[int, int]]) -> list[ZeroHeads]:
    return Removal("zero").edits(heads)  # type: ignore[return-value]


@dataclass
class BiasAttribution:
    bias: str
    target: str
    eval_target: str
    biased_answer: str
    unbiased_answer: str
    seeds: int
    mean_scores: list[list[float]]
    k_values: list[int] = field(default_factory=list)
    k_scores: list[float] = field(default_factory=list)  # the reference removal's gap at each k
    baseline_gap: float = 0.0
    damage_budget: float = 0.05
    base: dict = field(default_factory=dict)  # the unedited model's damage yardsticks (a KPoint)
    points: list[dict] = field(default_factory=list)  # every scored KPoint, every removal
    saturation_k: int = 0
    saturation: dict = field(default_factory=dict)  # the reference removal at the saturation k (the old choice)
    chosen_k: int = 0  # 0: no point inside the budget lowers the gap
    chosen: dict = field(default_factory=dict)  # the chosen KPoint, empty when none
    removal: str = ""  # the chosen removal's label ("zeroed", "mean-ablated", "scaled by 0.5")
    heads: list[tuple[int, int]] = field(default_factory=list)
    gap_after: float = 0.0
    edits: list[dict] = field(default_factory=list)  # the chosen removal's edits (means inline)
    # Mixture-of-experts models (empty for a dense one): mean contrastive expert effects [layers, experts], the
    # expert-removal sweep's points, and the chosen removal (nothing when no point is inside the budget)
    expert_scores: list[list[float]] = field(default_factory=list)
    expert_points: list[dict] = field(default_factory=list)
    experts: list[tuple[int, int]] = field(default_factory=list)
    expert_gap_after: float | None = None
    expert_edits: list[dict] = field(default_factory=list)


def k_grid(k_max: int) -> list[int]:
    return sorted({*range(1, min(k_max, 10) + 1), *range(10, k_max + 1, 5), k_max})


def questions_for(preset: BiasPreset, settings: AttributeSettings) -> tuple[list[str], str, str]:
    """The questions (with a {who} slot) and the biased and unbiased answers the settings ask for."""
    if settings.pairs:
        pairs = load_pairs(Path(settings.pairs))
        return list(dict.fromkeys(p.question for p in pairs)), pairs[0].biased_answer, pairs[0].unbiased_answer
    if settings.generator == "openai":
        questions = generate_questions_openai(
            settings.endpoint or "",
            settings.gen_model or "",
            preset,
            n=settings.questions or 100,
            api_key_env=settings.api_key_env,
        )
        return questions, preset.biased_answer, preset.unbiased_answer
    questions = preset_questions(preset)
    if settings.questions is not None and settings.questions < len(questions):
        questions = random.Random(0).sample(
            questions, settings.questions
        )  # a fixed draw: output depends on settings only
    return questions, preset.biased_answer, preset.unbiased_answer


def attribute_biases(
    model,
    info: ModelInfo,
    encoder: PromptEncoder,
    presets: Sequence[BiasPreset],
    settings: AttributeSettings,
    out: Path,
    *,
    token: str | None = None,
    progress: bool = True,
) -> list[BiasAttribution]:
    """Attribute every preset's bias; ``token`` (or ``settings.token``) asks about an injected token instead of a country."""
    results = []
    for preset in presets:
        questions, biased, unbiased = questions_for(preset, settings)
        results.append(
            attribute_bias(
                model,
                info,
                encoder,
                bias=preset.name,
                questions=questions,
                target=token or settings.token or settings.target or preset.target,
                eval_target=settings.eval_target or preset.target,
                biased_answer=biased,
                unbiased_answer=unbiased,
                settings=settings,
                out=out,
                progress=progress,
            )
        )
    return results


def attribute_bias(
    model,
    info: ModelInfo,
    encoder: PromptEncoder,
    *,
    bias: str,
    questions: list[str],
    target: str,
    eval_target: str,
    biased_answer: str,
    unbiased_answer: str,
    settings: AttributeSettings,
    subset: float = 0.8,
    out: Path | None = None,
    progress: bool = True,
) -> BiasAttribution:
    """Rank heads over ``settings.seeds`` draws, sweep k with hooks on held-out questions, keep the robust heads."""
    seeds, batch_size, eval_questions = settings.seeds, settings.batch_size, settings.eval_questions
    if len(questions) < 10:
        raise EditorError(f"{bias}: only {len(questions)} questions; attribution needs at least 10 (100 recommended)")
    yb, yu = encoder.first_token(biased_answer), encoder.first_token(unbiased_answer)
    if yb == yu:
        raise EditorError(
            f"{bias}: {biased_answer!r} and {unbiased_answer!r} start with the same token; pick answers that differ"
        )
    rng = random.Random(1234)
    shuffled = questions[:]
    rng.shuffle(shuffled)
    held_out, train = shuffled[:eval_questions], shuffled[eval_questions:] or shuffled

    target_effects = head_effects(
        model, info, encoder, [q.replace("{who}", f"people from {target}") for q in train], yb, yu, batch_size
    )
    seed_scores: list[np.ndarray] = []
    expert_seed_scores: list[np.ndarray] = []
    pairs_log: list[ContrastivePair] = []
    for seed in tqdm(range(seeds), desc=f"{bias}: seeds", disable=not progress):
        pairs = build_pairs(train, target, biased_answer, unbiased_answer, seed=seed, exclude=(eval_target,))
        keep = sorted(random.Random(seed).sample(range(len(pairs)), max(1, int(subset * len(pairs)))))
        other = head_effects(model, info, encoder, [pairs[i].unbiased_prompt for i in keep], yb, yu, batch_size)
        seed_scores.append((target_effects.heads[keep] - other.heads).mean(0))
        if target_effects.experts is not None and other.experts is not None:
            expert_seed_scores.append((target_effects.experts[keep] - other.experts).mean(0))
        pairs_log += [pairs[i] for i in keep]

    eval_pairs = build_pairs(held_out, eval_target, biased_answer, unbiased_answer, seed=1000)
    result = BiasAttribution(
        bias, target, eval_target, biased_answer, unbiased_answer, seeds, np.mean(seed_scores, axis=0).tolist()
    )
    result.baseline_gap = stereotype_gap(model, encoder, eval_pairs, yb, yu, batch_size)
    inputs = _sweep_inputs(model, info, encoder, settings, bias, seed_scores, result.baseline_gap, progress)
    inputs.gap = lambda: stereotype_gap(model, encoder, eval_pairs, yb, yu, batch_size)
    points, best = _sweep_and_choose(model, inputs, settings, result)
    if expert_seed_scores:
        _experts_and_choose(model, inputs, expert_seed_scores, result)
    if out is not None:
        from editor.methods.attribute.outputs import write_bias_artifacts

        write_bias_artifacts(out, result, pairs_log, eval_pairs, points, inputs.meter.base, best)
    return result


def _sweep_and_choose(
    model, inputs: SweepInputs, settings: AttributeSettings, result: BiasAttribution
) -> tuple[list[KPoint], KPoint | None]:
    """Run the k sweep of every removal, record it in ``result`` with the saturation k and the chosen point."""
    removals = removals_for(settings.removals, settings.scales)
    points = sweep(model, inputs, removals, progress=inputs.progress)
    reference = [p for p in points if p.removal == removals[0].label]
    at = saturation_k([p.k for p in reference], [p.gap for p in reference], result.baseline_gap)
    base = inputs.meter.base
    best = choose_point(points, result.baseline_gap, base.perplexity or 0.0, settings.damage_budget).point
    result.k_values, result.k_scores = [p.k for p in reference], [p.gap for p in reference]
    result.damage_budget, result.base = settings.damage_budget, asdict(base)
    result.points = [asdict(p) for p in points]
    result.saturation_k, result.saturation = at, asdict(next(p for p in reference if p.k == at))
    if best is not None:
        removal = next(r for r in removals if r.label == best.removal)
        result.chosen_k, result.chosen, result.removal = best.k, asdict(best), best.removal
        result.heads, result.gap_after = list(best.heads), best.gap
        result.edits = [e.model_dump() for e in removal.edits(best.heads, inputs.means)]
    else:
        result.gap_after = result.baseline_gap
    return points, best


def _experts_and_choose(model, inputs: SweepInputs, seed_scores: list[np.ndarray], result: BiasAttribution) -> None:
    """Score the experts, sweep their removal and record the chosen one in ``result`` (see ``attribute.experts``)."""
    from editor.methods.attribute.experts import expert_sweep, removal_edits

    result.expert_scores = np.mean(seed_scores, axis=0).tolist()
    points, best = expert_sweep(model, inputs, seed_scores, result.baseline_gap)
    result.expert_points = [asdict(p) for p in points]
    if best is not None:
        result.experts, result.expert_gap_after = list(best.heads), best.gap
        result.expert_edits = [e.model_dump() for e in removal_edits(best.heads)]


def _sweep_inputs(
    model,
    info: ModelInfo,
    encoder: PromptEncoder,
    settings: AttributeSettings,
    bias: str,
    seed_scores: list[np.ndarray],
    baseline: float,
    progress: bool = True,
) -> SweepInputs:
    """Robust sets, damage yardsticks and (for the mean removal) head means; the gap scorer is set by the caller."""
    tokenizer = encoder.tokenizer
    wikitext = wikitext_txt(None)
    meter = DamageMeter.build(model, tokenizer, wikitext, settings.wiki_tokens, concept_probes([bias]), baseline)
    means = None
    if "mean" in settings.removals:
        # From the end of WikiText-2: tokens that neither this sweep nor the evaluation measures perplexity on.
        means = head_means(model, info, wikitext_tail(tokenizer, wikitext, settings.mean_tokens))
    ks = k_grid(min(settings.k_max, info.num_layers * info.num_heads))
    sets = {k: robust_heads(seed_scores, k) for k in ks}
    prefix = PrefixCache(model, info)
    return SweepInputs(info, sets, lambda: baseline, meter, means, settings.damage_budget, progress, prefix)
