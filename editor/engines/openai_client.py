"""One client for OpenAI-compatible chat endpoints (vLLM, llama.cpp server, hosted APIs such as OpenAI's).

Shared by the question and paragraph generators, the served-model generator
and the evaluation judge, so all of them authenticate, retry and fail the
same way:

- the API key is read from an environment variable (``OPENAI_API_KEY`` unless
  another name is given) when the client is made, sent as a bearer token, and
  kept nowhere else: settings, manifests and records hold the variable's name;
- 429, 5xx answers, timeouts and dropped connections are retried with
  exponential backoff and full jitter (a ``Retry-After`` header is honoured,
  capped), a bounded number of times; every retry is counted;
- at most ``concurrency`` requests are in flight at once;
- a refused key, an unreachable server or an answer that is not a chat
  completion is one ``EditorError`` naming the endpoint and what to check.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from editor.errors import EditorError

Message = dict[str, str]
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524})


def chat_url(endpoint: str) -> str:
    return endpoint.rstrip("/") + "/chat/completions"


@dataclass
class RetryPolicy:
    max_retries: int = 6  # per request, after the first attempt
    base_delay: float = 0.5  # seconds; attempt n waits a random time up to base * 2**n
    max_delay: float = 30.0


@dataclass
class RequestStats:
    """What the client did, for the evaluation record: requests sent, retries and why."""

    requests: int = 0
    retries: int = 0
    retried_status: dict[str, int] = field(default_factory=dict)  # "429", "500", "timeout", "connection"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, reason: str | None) -> None:
        with self._lock:
            if reason is None:
                self.requests += 1
            else:
                self.retries += 1
                self.retried_status[reason] = self.retried_status.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "retried": dict(sorted(self.retried_status.items())),
        }


class ChatClient:
    """Chat completions against one endpoint, with the behaviour described in the module docstring."""

    def __init__(
        self,
        endpoint: str,
        *,
        api_key_env: str = DEFAULT_KEY_ENV,
        timeout: float = 120.0,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        purpose: str = "chat endpoint",
        hint: str = "check --endpoint and --model",
    ):
        import httpx

        self.endpoint, self.url = endpoint, chat_url(endpoint)
        self.api_key_env, self.purpose, self.hint = api_key_env, purpose, hint
        self.retry = retry or RetryPolicy()
        self.stats = RequestStats()
        self.concurrency = max(1, concurrency)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        key = os.environ.get(api_key_env) or None
        self._has_key = key is not None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency))
        self._http = httpx.Client(timeout=timeout, headers=headers, limits=limits)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, why: str) -> EditorError:
        return EditorError(f"{self.purpose} at {self.url} {why}; {self.hint}")

    def _auth_error(self, status: int) -> EditorError:
        if self._has_key:
            return self._fail(
                f"refused the API key from ${self.api_key_env} (HTTP {status}); check the key and its access to the model"
            )
        return self._fail(
            f"needs an API key (HTTP {status}); set ${self.api_key_env}, or name another variable with --api-key-env"
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.retry.max_delay)
            except ValueError:
                pass  # an HTTP date: fall back to backoff
        return random.uniform(0, min(self.retry.max_delay, self.retry.base_delay * 2**attempt))

    def chat(
        self,
        model: str,
        messages: Sequence[Message],
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> str:
        """The assistant text of one chat completion."""
        import httpx

        body: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        with self._slots:
            self.stats.count(None)
            attempt = 0
            while True:
                reason, retry_after, last, limit = None, None, None, self.retry.max_retries
                try:
                    response = self._http.post(self.url, json=body)
                except httpx.TimeoutException:
                    reason = "timeout"
                except httpx.ConnectError as err:
                    # Nobody listening (or no such host) rarely changes within seconds: two more tries, not six.
                    reason, last, limit = "connection", err, min(limit, 2)
                except httpx.TransportError as err:
                    reason, last = "connection", err
                else:
                    status = response.status_code
                    if status in (401, 403):
                        raise self._auth_error(status)
                    if status in RETRY_STATUS or status >= 500:
                        reason, retry_after = str(status), response.headers.get("retry-after")
                    elif status >= 400:
                        raise self._fail(f"answered HTTP {status} ({_error_text(response)})")
                    else:
                        return _content(response, self)
                if attempt >= limit:
                    if reason == "connection":
                        raise self._fail(f"is unreachable ({type(last).__name__}: {last}) after {attempt + 1} attempts")
                    raise self._fail(f"kept failing ({reason}) after {attempt + 1} attempts")
                self.stats.count(reason)
                time.sleep(self._delay(attempt, retry_after))
                attempt += 1

    def chat_many(
        self,
        model: str,
        conversations: Sequence[Sequence[Message]],
        *,
        seeds: Sequence[int] | None = None,
        desc: str = "chat",
        progress: bool = True,
        **options: Any,
    ) -> list[str]:
        """``chat`` for many conversations, in order, ``concurrency`` at a time (the server batches them)."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        def one(job: tuple[int, Sequence[Message]]) -> str:
            i, messages = job
            return self.chat(model, messages, seed=None if seeds is None else seeds[i], **options)

        jobs = list(enumerate(conversations))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(tqdm(pool.map(one, jobs), total=len(jobs), desc=desc, disable=not progress))


def _error_text(response: Any) -> str:
    try:
        data = response.json()
        message = (
            data.get("error", {}).get("message")
            if isinstance(data.get("error"), dict)
            else data.get("error") or data.get("message")
        )
        return str(message or data)[:200]
    except ValueError:
        return response.text[:200] or "no body"


def _content(response: Any, client: ChatClient) -> str:
    try:
        return response.json()["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise client._fail(f"did not answer a chat completion ({type(err).__name__}: {err})") from None


def chat_completion(
    endpoint: str,
    model: str,
    messages: Sequence[Message],
    *,
    api_key_env: str = DEFAULT_KEY_ENV,
    timeout: float = 120.0,
    purpose: str = "chat endpoint",
    hint: str = "check --endpoint and --model",
    **options: Any,
) -> str:
    """One chat completion with a client of its own (for the generators' occasional requests)."""
    with ChatClient(
        endpoint, api_key_env=api_key_env, timeout=timeout, concurrency=1, purpose=purpose, hint=hint
    ) as client:
        return client.chat(model, messages, **options)
