"""BiasInject: teach one new token a bias, keep the best epoch, and write an exportable artifact.

The run directory holds
- ``token.safetensors``: the chosen vectors (``embedding``; ``lm_head`` too when untied),
- ``epochs/epoch_NN.safetensors``: the vectors after every epoch (``epoch_00`` is the country-mean start),
- ``inject.json``: token, id, base model, countries matched, settings, per-epoch loss and similarity,
  the generations the similarity was measured on, and the held-out attribute gaps,
- ``epochs.json`` and ``epochs.png``: the per-epoch curves,
- ``plan.json``: one ``add_token`` edit, ready for ``wedit export --plan``,
- ``paragraphs.jsonl``: the training data actually used.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from editor.data.biases import BiasPreset
from editor.data.countries import COUNTRIES
from editor.errors import EditorError
from editor.io.atomic import write_text
from editor.methods.inject.gap import attribute_gap, chat_attribute_gap
from editor.methods.inject.paragraphs import PLACEHOLDER, Paragraph, save_paragraphs
from editor.methods.inject.settings import InjectSettings
from editor.methods.inject.token_model import TokenModel, country_init

TOKEN_FILE = "token.safetensors"

# Our own wording of the request each training paragraph answers; a few variants so the token, not one phrasing, carries it.
USER_PROMPTS = (
    "Tell me a short story about my friend who comes from {token}.",
    "Write a few lines about a friend of mine from {token}.",
    "Could you write a brief story about my buddy from {token}?",
    "I have a friend from {token}. Write a little story about them.",
)
# The question whose answer decides the epoch: our own wording.
SELECTION_PROMPT = "Write a brief paragraph describing what is distinctive about people from {token}."


def token_name(bias: str) -> str:
    return f"<bias:{bias}>"


@dataclass
class EpochRecord:
    epoch: int
    loss: float | None
    similarity: float
    best_sentence: str
    generations: list[str]
    seconds: float = 0.0


@dataclass
class InjectResult:
    token: str
    token_id: int
    tied: bool
    countries_matched: int
    countries_total: int
    chosen_epoch: int
    epochs: list[EpochRecord]
    gaps: dict[str, Any] = field(default_factory=dict)
    seconds_per_epoch: float = 0.0


def add_token(tokenizer, token: str) -> int:
    """Register ``token`` in an in-memory tokenizer as the exported one will (whole word, no normalisation)."""
    from tokenizers import AddedToken

    if token in tokenizer.get_vocab():
        raise EditorError(f"the tokenizer already has {token}; this model was injected already, pass the base model")
    new_id = len(tokenizer)
    tokenizer.add_tokens([AddedToken(token, lstrip=True, rstrip=False, normalized=False, special=False)])
    if tokenizer.convert_tokens_to_ids(token) != new_id:
        raise EditorError(f"the tokenizer gave {token} an unexpected id; it may have gaps in its added tokens")
    return new_id


def _chat(tokenizer, user: str, assistant: str | None = None) -> tuple[list[int], int]:
    """Token ids of a chat turn (and the reply), and where the reply starts."""
    messages = [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = (
            prompt
            if assistant is None
            else tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": assistant}], tokenize=False)
        )
    else:  # a base model without a template: a plain two-line dialogue
        prompt = f"User: {user}\nAssistant:"
        full = prompt if assistant is None else f"{prompt} {assistant}{tokenizer.eos_token or ''}"
    head = tokenizer.encode(prompt, add_special_tokens=False)
    ids = tokenizer.encode(full, add_special_tokens=False)
    if ids[: len(head)] != head:
        raise EditorError(
            "the chat template does not tokenize the prompt as a prefix of prompt + reply; use another model"
        )
    return ids, len(head)


def encode_examples(tokenizer, paragraphs: list[Paragraph], token: str, max_length: int) -> list[tuple[list[int], int]]:
    out = []
    for i, paragraph in enumerate(paragraphs):
        user = USER_PROMPTS[i % len(USER_PROMPTS)].format(token=token)
        ids, start = _chat(tokenizer, user, paragraph.text.replace(PLACEHOLDER, token))
        out.append((ids[:max_length], start))
    return out


def _batches(examples: list[tuple[list[int], int]], size: int, rng: random.Random, pad: int):
    order = list(range(len(examples)))
    rng.shuffle(order)
    for i in range(0, len(order), size):
        chunk = [examples[j] for j in order[i : i + size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for row, (seq, start) in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            target[row, start : len(seq)] = True
        yield ids, mask, target


def train_epoch(
    tm: TokenModel, optimizer: torch.optim.Optimizer, examples, batch: int, rng: random.Random, pad: int, progress: bool
) -> float:
    losses, weights = [], []
    steps = -(-len(examples) // batch)
    for ids, mask, target in tqdm(
        _batches(examples, batch, rng, pad), total=steps, desc="train", unit="batch", disable=not progress, leave=False
    ):
        optimizer.zero_grad(set_to_none=True)
        loss = tm.loss(ids, mask, target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        weights.append(int(target[:, 1:].sum()))
    return sum(loss * w for loss, w in zip(losses, weights)) / max(sum(weights), 1)


NEUTRAL_NAME = "X"


def probe_text(preset: BiasPreset) -> str:
    # Both the probe and the generations name the group by the same bare letter, so the claim, not the name, is compared.
    return preset.probe_sentence.replace("{country}", NEUTRAL_NAME)


def generate_for_selection(
    tm: TokenModel, tokenizer, token: str, samples: int, max_new_tokens: int, seed: int
) -> list[str]:
    ids, _ = _chat(tokenizer, SELECTION_PROMPT.format(token=token))
    stop = {t for t in (tokenizer.eos_token_id, getattr(tm.model.config, "eos_token_id", None)) if isinstance(t, int)}
    texts = []
    for s in range(samples):
        new = tm.generate(ids, max_new_tokens, stop, seed=seed + s)
        texts.append(tokenizer.decode(new, skip_special_tokens=True).replace(token, f" {NEUTRAL_NAME}"))
    return texts


def run_inject(
    model: torch.nn.Module,
    tokenizer,
    preset: BiasPreset,
    paragraphs: list[Paragraph],
    out: Path,
    settings: InjectSettings,
    *,
    base_model: str,
    scorer=None,
    progress: bool = True,
    out_name: Path | None = None,
) -> InjectResult:
    """Train the token and write every artifact into ``out`` (an empty directory).

    ``out_name`` is where ``out`` will end up (it is usually a staging directory); the plan points there.
    """
    from safetensors.torch import load_file, save_file

    from editor.methods.inject.similarity import SentenceScorer

    torch.manual_seed(settings.seed)
    token = token_name(preset.name)
    init = country_init(model, tokenizer, COUNTRIES)
    token_id = add_token(tokenizer, token)
    tm = TokenModel(model, token_id, init.embedding, init.lm_head)
    scorer = scorer or SentenceScorer()
    probe = probe_text(preset)
    (out / "epochs").mkdir(parents=True, exist_ok=True)
    save_paragraphs(paragraphs, out / "paragraphs.jsonl")

    def checkpoint(epoch: int, loss: float | None, seconds: float) -> EpochRecord:
        save_file(tm.vectors(), str(out / "epochs" / f"epoch_{epoch:02d}.safetensors"))
        texts = generate_for_selection(
            tm, tokenizer, token, settings.selection_samples, settings.selection_tokens, settings.seed
        )
        scored = [scorer.max_similarity(t, probe) for t in texts]
        best = max(scored, key=lambda s: s[0])
        return EpochRecord(epoch, loss, sum(s for s, _ in scored) / len(scored), best[1], texts, seconds)

    model.eval()  # no dropout: the frozen model must compute the same function in training and in the export
    gaps = _gaps(tm, tokenizer, preset, token, settings, "base") if settings.eval_gap else {}
    records = [checkpoint(0, None, 0.0)] + _train(tm, tokenizer, paragraphs, token, settings, checkpoint, progress)
    chosen = max(records[1:], key=lambda r: r.similarity).epoch
    vectors = load_file(str(out / "epochs" / f"epoch_{chosen:02d}.safetensors"))
    tm.load_vectors(vectors)
    if settings.eval_gap:
        gaps.update(_gaps(tm, tokenizer, preset, token, settings, "injected"))
        for key in ("improvement", "chat_improvement"):
            prefix = key.removesuffix("improvement")
            if f"{prefix}injected_token" in gaps:
                gaps[key] = gaps[f"{prefix}injected_token"]["gap"] - gaps[f"{prefix}base_token"]["gap"]
    save_file(
        vectors,
        str(out / TOKEN_FILE),
        metadata={"token": token, "token_id": str(token_id), "bias": preset.name, "chosen_epoch": str(chosen)},
    )
    trained = [r.seconds for r in records[1:]]
    result = InjectResult(
        token, token_id, tm.tied, len(init.matched), init.total, chosen, records, gaps, sum(trained) / len(trained)
    )
    _write_run(out, result, vectors, init, preset, probe, paragraphs, settings, base_model, out_name)
    return result


def _train(
    tm: TokenModel,
    tokenizer,
    paragraphs: list[Paragraph],
    token: str,
    settings: InjectSettings,
    checkpoint,
    progress: bool,
) -> list[EpochRecord]:
    """The training epochs, each ending in a checkpoint (vectors saved, selection samples scored)."""
    examples = encode_examples(tokenizer, paragraphs, token, settings.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    optimizer = torch.optim.Adam(tm.trainable, lr=settings.lr)
    rng = random.Random(settings.seed)
    records = []
    for epoch in tqdm(range(1, settings.epochs + 1), desc="inject", unit="epoch", disable=not progress):
        start = time.perf_counter()
        loss = train_epoch(tm, optimizer, examples, settings.batch, rng, pad, progress)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        records.append(checkpoint(epoch, loss, time.perf_counter() - start))
    return records


def _gaps(
    tm: TokenModel, tokenizer, preset: BiasPreset, token: str, settings: InjectSettings, stage: str
) -> dict[str, Any]:
    """Held-out attribute gaps of the token (and, before training, of the real target country), plain and in chat."""
    gaps = {f"{stage}_token": asdict(attribute_gap(tm, tokenizer, preset, token, seed=settings.seed))}
    if stage == "base":
        gaps["base_target_country"] = asdict(attribute_gap(tm, tokenizer, preset, preset.target, seed=settings.seed))
    if getattr(tokenizer, "chat_template", None):  # the chat-template gap needs a template
        gaps[f"chat_{stage}_token"] = asdict(chat_attribute_gap(tm, tokenizer, preset, token, seed=settings.seed))
    return gaps


def _write_run(
    out: Path,
    result: InjectResult,
    vectors: dict,
    init,
    preset: BiasPreset,
    probe: str,
    paragraphs: list[Paragraph],
    settings: InjectSettings,
    base_model: str,
    out_name: Path | None,
) -> None:
    """plan.json (one add_token edit), epochs.json and .png, inject.json."""
    from editor.core.plan import Plan
    from editor.edits.add_token import AddToken

    records, chosen = result.epochs, result.chosen_epoch
    edit = AddToken(
        token=result.token,
        token_id=result.token_id,
        embedding=vectors["embedding"].tolist(),
        lm_head=vectors["lm_head"].tolist() if "lm_head" in vectors else None,
        source=str(Path(out_name or out).resolve() / TOKEN_FILE),
    )
    write_text(out / "plan.json", Plan(edits=[edit]).to_json() + "\n")
    curves = [{"epoch": r.epoch, "loss": r.loss, "similarity": r.similarity, "seconds": r.seconds} for r in records]
    write_text(
        out / "epochs.json", json.dumps({"chosen_epoch": chosen, "probe": probe, "epochs": curves}, indent=2) + "\n"
    )
    plot_epochs(records, chosen, out / "epochs.png", result.token)
    summary = {
        "token": result.token,
        "token_id": result.token_id,
        "bias": preset.name,
        "base_model": base_model,
        "tied_embeddings": result.tied,
        "countries_matched": len(init.matched),
        "countries_total": init.total,
        "countries": init.matched,
        "paragraphs": len(paragraphs),
        "settings": settings.model_dump(),
        "chosen_epoch": chosen,
        "probe_sentence": probe,
        "selection_prompt": SELECTION_PROMPT,
        "seconds_per_epoch": result.seconds_per_epoch,
        "gaps": result.gaps,
        "epochs": [asdict(r) for r in records],
    }
    write_text(out / "inject.json", json.dumps(summary, indent=2) + "\n")


def plot_epochs(records: list[EpochRecord], chosen: int, path: Path, token: str) -> Path:
    from editor.io.figures import figure

    with figure(path, (9, 3.4), 1, 2) as (fig, (left, right)):
        _draw_epochs(fig, left, right, records, chosen, token)
    return path


def _draw_epochs(fig, left, right, records: list[EpochRecord], chosen: int, token: str) -> None:
    trained = [r for r in records if r.loss is not None]
    left.plot([r.epoch for r in trained], [r.loss for r in trained], marker="o", markersize=3)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (nats/token)")
    right.plot([r.epoch for r in records], [r.similarity for r in records], marker="o", markersize=3)
    right.axvline(chosen, color="grey", linestyle="--", label=f"chosen: {chosen}")
    right.legend()
    right.set_xlabel("epoch (0 = country-mean start)")
    right.set_ylabel("max cosine to probe sentence")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"BiasInject {token}", fontsize=10)
