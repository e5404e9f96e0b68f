"""One small client for OpenAI-compatible chat endpoints (vLLM, llama.cpp server, hosted APIs).

Shared by the question generator and the evaluation judge so both fail the
same way: a one-line ``EditorError`` naming the URL and the flags to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from editor.errors import EditorError

Message = dict[str, str]


def chat_url(endpoint: str) -> str:
    return endpoint.rstrip("/") + "/chat/completions"


def chat_completion(
    endpoint: str,
    model: str,
    messages: Sequence[Message],
    *,
    temperature: float = 0.0,
    max_tokens: int = 512,
    timeout: float = 120.0,
    seed: int | None = None,
    purpose: str = "chat endpoint",
    hint: str = "check --endpoint and --model",
    client: Any | None = None,
) -> str:
    """The assistant text of one chat completion; any transport or format problem is an ``EditorError``."""
    import httpx

    url = chat_url(endpoint)
    body: dict[str, Any] = {"model": model, "messages": list(messages), "temperature": temperature, "max_tokens": max_tokens}
    if seed is not None:
        body["seed"] = seed
    try:
        response = (client or httpx).post(url, json=body, timeout=timeout)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
        raise EditorError(f"{purpose} at {url} failed ({type(err).__name__}: {err}); {hint}") from None
    return content or ""


def chat_completions(
    endpoint: str,
    model: str,
    conversations: Sequence[Sequence[Message]],
    *,
    workers: int = 8,
    timeout: float = 120.0,
    seeds: Sequence[int] | None = None,
    desc: str = "chat",
    progress: bool = True,
    **options: Any,
) -> list[str]:
    """``chat_completion`` for many conversations at once, in order: concurrent requests on one connection pool,
    so the server can batch them. ``options`` go to ``chat_completion`` (temperature, max_tokens, purpose, hint)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from tqdm.auto import tqdm

    with httpx.Client(timeout=timeout) as client:

        def one(job: tuple[int, Sequence[Message]]) -> str:
            i, messages = job
            seed = None if seeds is None else seeds[i]
            return chat_completion(endpoint, model, messages, timeout=timeout, seed=seed, client=client, **options)

        jobs = list(enumerate(conversations))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(tqdm(pool.map(one, jobs), total=len(jobs), desc=desc, disable=not progress))
