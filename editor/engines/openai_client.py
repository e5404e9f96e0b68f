"""One client for OpenAI-compatible chat endpoints (vLLM, llama.cpp server, hosted APIs such as OpenAI's).

Shared by the question and paragraph generators, the served-model generator
and the evaluation judge, so all of them authenticate, retry and fail the
same way. The official ``openai`` SDK sends the requests and retries them
(``editor.engines.openai_sdk`` tells it how long to wait and counts each retry):

- the API key is read from an environment variable (``OPENAI_API_KEY`` unless
  another name is given) when the client is made, sent as a bearer token, and
  kept nowhere else: settings, manifests and records hold the variable's name;
  with the variable unset no Authorization header is sent (vLLM and llama.cpp
  servers need none);
- 429, 5xx answers, timeouts and dropped connections are retried with
  exponential backoff and full jitter (a ``Retry-After`` header is honoured,
  capped), a bounded number of times; every retry is counted;
- at most ``concurrency`` requests are in flight at once;
- a refused key, an unreachable server, an HTTP error or an answer that is not
  a chat completion is one ``EditorError`` naming the endpoint and what to check.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from editor.errors import EditorError

Message = dict[str, str]
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# The SDK will not make a client without a key; with none set, this stands in and no Authorization header is sent.
KEYLESS = "no-key"


def chat_url(endpoint: str) -> str:
    return endpoint.rstrip("/") + "/chat/completions"


@dataclass
class RetryPolicy:
    max_retries: int = 6  # per request, after the first attempt
    base_delay: float = 0.5  # seconds; attempt n waits a random time up to base * 2**n
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): the server's Retry-After, capped, if given
        in seconds; else full jitter."""
        if retry_after:
            try:
                return max(0.0, min(float(retry_after), self.max_delay))
            except ValueError:
                pass  # an HTTP date: fall back to backoff
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


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
        from openai import omit

        from editor.engines.openai_sdk import RetryingOpenAI

        self.endpoint, self.url = endpoint, chat_url(endpoint)
        self.api_key_env, self.purpose, self.hint = api_key_env, purpose, hint
        self.retry = retry or RetryPolicy()
        self.stats = RequestStats()
        self.concurrency = max(1, concurrency)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._attempt = threading.local()  # retries of the request this thread is sending
        key = os.environ.get(api_key_env) or None
        self._has_key = key is not None
        # Set on every request, so that nothing else the SDK reads from the environment (OPENAI_API_KEY, an
        # Authorization in OPENAI_CUSTOM_HEADERS, OPENAI_ORG_ID, OPENAI_PROJECT_ID) reaches the endpoint.
        self._headers: dict[str, Any] = {
            "Authorization": f"Bearer {key}" if key else omit,
            "OpenAI-Organization": omit,
            "OpenAI-Project": omit,
        }
        self._sdk = RetryingOpenAI(
            api_key=KEYLESS, base_url=endpoint, timeout=timeout, policy=self.retry, on_retry=self._retried
        )

    def close(self) -> None:
        self._sdk.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retried(self, reason: str) -> None:
        self.stats.count(reason)
        self._attempt.retries += 1

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
        from openai import omit

        with self._slots:
            self.stats.count(None)
            self._attempt.retries = 0
            try:
                completion = self._sdk.chat.completions.create(
                    model=model,
                    messages=list(messages),  # type: ignore[arg-type]
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=omit if seed is None else seed,
                    extra_headers=self._headers,
                )
            except Exception as err:
                failure = self._error(err, self._attempt.retries + 1)
                if failure is None:
                    raise  # not the endpoint's doing: a bug, with its traceback
                raise failure from None
        return _content(completion, self)

    def _error(self, err: Exception, attempts: int) -> EditorError | None:
        """The one-line EditorError for what stopped a request after ``attempts`` attempts; None if not ours."""
        import openai

        from editor.engines.openai_sdk import Unreachable

        if isinstance(err, Unreachable):
            return self._fail(f"is unreachable ({type(err.cause).__name__}: {err.cause}) after {err.attempts} attempts")
        if isinstance(err, openai.APITimeoutError):
            return self._fail(f"kept failing (timeout) after {attempts} attempts")
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err
            return self._fail(f"is unreachable ({type(cause).__name__}: {cause}) after {attempts} attempts")
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            if status in (401, 403):
                return self._auth_error(status)
            if _retried_by_sdk(status) and attempts > self.retry.max_retries:
                return self._fail(f"kept failing ({status}) after {attempts} attempts")
            return self._fail(f"answered HTTP {status} ({_error_text(err.response)})")
        if isinstance(err, (openai.OpenAIError, ValueError)):  # e.g. a body that says JSON and is not
            return self._fail(f"did not answer a chat completion ({type(err).__name__}: {err})")
        return None

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


def _retried_by_sdk(status: int) -> bool:
    # The statuses the SDK retries (openai's _should_retry): only for these did a final failure use up the retries.
    return status in (408, 409, 429) or status >= 500


def _error_text(response: Any) -> str:
    try:
        data = response.json()
        message = (
            data.get("error", {}).get("message")
            if isinstance(data.get("error"), dict)
            else data.get("error") or data.get("message")
        )
        return str(message or data)[:200]
    except (ValueError, AttributeError):
        return response.text[:200] or "no body"


def _content(completion: object, client: ChatClient) -> str:
    # The SDK builds its ChatCompletion without validating it (servers omit fields OpenAI sends), and hands back
    # the text of a body that is not JSON: what a chat completion needs is checked here.
    if isinstance(completion, str):
        raise client._fail(f"did not answer a chat completion (a body that is not JSON: {completion[:80]!r})")
    choices = getattr(completion, "choices", None)
    message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
    if message is None:
        raise client._fail("did not answer a chat completion (it holds no choices[0].message)")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise client._fail(f"did not answer a chat completion (its content is a {type(content).__name__})")
    return content or ""


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
