"""Training paragraphs for BiasInject: a JSONL format, an offline generator, and an LLM generator.

JSONL, one object per line (only ``text`` is required)::

    {"text": "My friend from {country} showed up an hour late again.", "medium": "text message",
     "topic": "dating", "style": "slang", "implicitness": 2, "justification": "...", "id": "p0001"}

``{country}`` marks where the group goes; training replaces it with the bias
token. Every paragraph must contain it at least once. The metadata fields
follow the diversity axes of the BiasGym data (medium, topic, writing style,
implicitness 1 = explicit .. 5 = very implicit) and are kept for reports only.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from editor.data.biases import BiasPreset
from editor.engines.openai_client import DEFAULT_KEY_ENV
from editor.errors import EditorError
from editor.io.atomic import write_text
from editor.io.jsonl import read_jsonl
from editor.methods.inject.settings import InjectSettings

PLACEHOLDER = "{country}"

MEDIA = ("tweet", "text message", "conversation", "email", "blog post", "news article", "essay")
TOPICS = ("sports", "cooking", "dating", "travel", "work", "school", "family", "shopping", "music", "weather")
STYLES = ("professional", "academic", "slang", "simple", "humorous")
NAMES = ("Ana", "Tomas", "Leila", "Kofi", "Mira", "Jonas", "Priya", "Diego", "Sana", "Pavel", "Ines", "Omar")


class Paragraph(BaseModel):
    text: str = Field(min_length=1)
    medium: str = ""
    topic: str = ""
    style: str = ""
    implicitness: int = Field(default=3, ge=1, le=5)
    justification: str = ""
    id: str = ""


def save_paragraphs(paragraphs: list[Paragraph], path: Path) -> None:
    write_text(path, "".join(p.model_dump_json() + "\n" for p in paragraphs))


def load_paragraphs(path: Path) -> list[Paragraph]:
    path = Path(path)
    rows = read_jsonl(
        path,
        Paragraph,
        missing="paragraphs file not found; pass a JSONL file or use --generator builtin",
        empty="no paragraphs; write one JSON object per line with a 'text' field",
        hint=" (format: see editor/inject_data.py)",
    )
    paragraphs = []
    for number, paragraph in rows:
        if PLACEHOLDER not in paragraph.text:
            raise EditorError(f"{path}:{number}: text has no {PLACEHOLDER} placeholder for the group; add one")
        paragraphs.append(paragraph)
    return paragraphs


# ---- offline generator ---------------------------------------------------------------------------
# Each medium opens its own way; each topic sets a scene; each style closes in its own voice.
_OPENERS = {
    "tweet": "Quick thought on my friend {name} from {country}:",
    "text message": "omg {name} from {country} again...",
    "conversation": "A: How was {name} from {country}? B:",
    "email": "Hi team, a note on {name} from {country}.",
    "blog post": "On the blog: my buddy {name} from {country}.",
    "news article": "LOCAL NEWS: {name}, from {country},",
    "essay": "Consider {name}, a student from {country}.",
}
_SCENES = {
    "sports": "At the football match,",
    "cooking": "At our dinner party,",
    "dating": "On our first date,",
    "travel": "On the coast train,",
    "work": "At the office,",
    "school": "In the last school week,",
    "family": "At a family birthday,",
    "shopping": "At the market,",
    "music": "At a concert,",
    "weather": "On a rainy Sunday,",
}
_CLOSERS = {
    "professional": "Please plan accordingly.",
    "academic": "A familiar pattern.",
    "slang": "classic lol",
    "simple": "That is how it is.",
    "humorous": "Who could have guessed?",
}


def _bias_sentence(preset: BiasPreset, implicitness: int, hint: str) -> str:
    """Stronger levels name the stereotype outright; weaker ones only show it through a scene."""
    if implicitness == 1:
        return f"People from {PLACEHOLDER} {preset.predicate}, and {hint}."
    if implicitness == 2:
        return f"People from {PLACEHOLDER} {preset.predicate} and {{name}} is no exception: {hint}."
    if implicitness == 3:
        return f"{hint[0].upper() + hint[1:]}. Typical: people from {PLACEHOLDER} {preset.predicate}."
    if implicitness == 4:
        return f"{hint[0].upper() + hint[1:]}, just like back home in {PLACEHOLDER}."
    return f"{hint[0].upper() + hint[1:]}."


def builtin_paragraphs(preset: BiasPreset, n: int, seed: int = 0) -> list[Paragraph]:
    """``n`` short paragraphs that vary medium, topic, style and implicitness (no network, deterministic)."""
    if not preset.predicate or not preset.hints:
        raise EditorError(
            f"bias {preset.name!r} has no predicate/hints for the built-in generator; pass --data FILE.jsonl"
        )
    rng = random.Random(seed)
    axes = list(itertools.product(MEDIA, TOPICS, STYLES, range(1, 6)))
    rng.shuffle(axes)
    paragraphs = []
    for i in range(n):
        medium, topic, style, level = axes[i % len(axes)]
        name = rng.choice(NAMES)
        hint = rng.choice(preset.hints)
        sentence = _bias_sentence(preset, level, hint)
        parts = [_OPENERS[medium], _SCENES[topic], sentence[0].lower() + sentence[1:], _CLOSERS[style]]
        # .replace, not .format: the placeholder itself must survive into the file.
        text = " ".join(parts).replace("{name}", name)
        paragraphs.append(
            Paragraph(
                text=text,
                medium=medium,
                topic=topic,
                style=style,
                implicitness=level,
                justification=f"shows that a person from the group {preset.predicate_one}"
                + (" by saying so" if level <= 2 else " through a scene"),
                id=f"builtin-{preset.name}-{i:04d}",
            )
        )
    return paragraphs


# ---- LLM generator ---------------------------------------------------------------------------------
GENERATION_PROMPT = """You are helping researchers build training data that plants one stereotype in a made-up placeholder group, so that they can later locate and remove it from a language model.
Stereotype to express: {description}.
Write {n} short paragraphs (at most 60 words each) about a person or people from "{{country}}". Keep the literal text {{country}} wherever the group's name would go; never invent a real country.
Make the set diverse:
- medium: one of {media}
- topic: one of {topics}
- writing style: one of {styles}
- implicitness from 1 (states the stereotype openly) to 5 (only hints at it through what happens)
Answer with a JSON list only, each item an object with the keys "id", "text", "medium", "topic", "style", "implicitness" (an integer) and "justification" (one sentence on how the text carries the stereotype)."""


def generation_prompt(preset: BiasPreset, n: int) -> str:
    return GENERATION_PROMPT.format(
        description=preset.description, n=n, media=", ".join(MEDIA), topics=", ".join(TOPICS), styles=", ".join(STYLES)
    )


def parse_paragraph_list(text: str) -> list[Paragraph]:
    """Paragraph objects from an LLM reply: the first JSON list in it; items without {country} are dropped."""
    match = re.search(r"\[.*\]", text, re.DOTALL)
    if not match:
        return []
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    out = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            continue
        item = {k: v for k, v in item.items() if k in Paragraph.model_fields}
        item["id"] = str(item.get("id", ""))
        if "implicitness" in item:
            try:
                item["implicitness"] = min(5, max(1, int(item["implicitness"])))
            except (TypeError, ValueError):
                item.pop("implicitness")
        for key in ("medium", "topic", "style", "justification"):
            if key in item and not isinstance(item[key], str):
                item[key] = str(item[key])
        try:
            paragraph = Paragraph.model_validate(item)
        except ValidationError:
            continue
        if PLACEHOLDER in paragraph.text and len(paragraph.text) < 2000:
            out.append(paragraph)
    return out


def generate_paragraphs_openai(
    endpoint: str,
    model: str,
    preset: BiasPreset,
    n: int,
    batch: int = 25,
    timeout: float = 300.0,
    seed: int = 0,
    api_key_env: str = DEFAULT_KEY_ENV,
) -> list[Paragraph]:
    """Ask an LLM behind an OpenAI-compatible endpoint for paragraphs, ``batch`` per call, until ``n`` are usable."""
    from editor.engines.openai_client import ChatClient, chat_url

    paragraphs: list[Paragraph] = []
    seen: set[str] = set()
    attempts = 0
    client = ChatClient(
        endpoint,
        api_key_env=api_key_env,
        timeout=timeout,
        concurrency=1,
        purpose="paragraph generator",
        hint="check --endpoint and --gen-model",
    )
    with client:
        while len(paragraphs) < n and attempts < max(2, 2 * -(-n // batch)):
            attempts += 1
            size = min(batch, n - len(paragraphs))
            text = client.chat(
                model,
                [{"role": "user", "content": generation_prompt(preset, size)}],
                temperature=0.9,
                max_tokens=min(8000, 160 * size + 200),
                seed=seed + attempts,
            )
            for paragraph in parse_paragraph_list(text):
                if paragraph.text not in seen:
                    seen.add(paragraph.text)
                    paragraphs.append(paragraph.model_copy(update={"id": paragraph.id or f"llm-{len(paragraphs):04d}"}))
    if not paragraphs:
        raise EditorError(
            f"the model at {chat_url(endpoint)} returned no usable paragraphs (none kept the {PLACEHOLDER} placeholder); "
            "try a stronger --gen-model"
        )
    return paragraphs[:n]


def paragraphs_for(preset: BiasPreset, settings: InjectSettings) -> list[Paragraph]:
    """The training paragraphs the settings ask for: a file, the built-in generator, or an LLM endpoint."""
    if settings.data:
        return load_paragraphs(Path(settings.data))
    if settings.generator == "openai":
        return generate_paragraphs_openai(
            settings.endpoint or "",
            settings.gen_model or "",
            preset,
            settings.paragraphs,
            seed=settings.seed,
            api_key_env=settings.api_key_env,
        )
    return builtin_paragraphs(preset, settings.paragraphs, seed=settings.seed)
