"""The official OpenAI SDK client, told editor's wait between tries and made to report each retry and its cause.

The SDK does the work: it sends the request, decides what is retried (429,
408, 409, 5xx, timeouts, dropped connections; ``x-should-retry`` honoured; a
``Retry-After`` above two minutes is not waited for) and stops after
``max_retries``. It has no public hook for the wait or for noticing a retry, so
this subclass overrides the one method its retry loop calls just before every
retry, ``_sleep_for_retry`` (the same keyword signature from openai 3.0 on;
pyproject's bound keeps it there, and tests/test_hosted_endpoints.py fails if
it moves). Imported only when a client is made: the SDK takes most of a second
to import, and the settings modules that name ``DEFAULT_KEY_ENV`` need none of it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2
import openai

if TYPE_CHECKING:
    from editor.engines.openai_client import RetryPolicy

# Nobody listening (or no such host) rarely changes within seconds: two more tries, not the whole budget.
CONNECT_RETRIES = 2


class Unreachable(Exception):
    """Connections refused ``CONNECT_RETRIES + 1`` times in a row, raised through the SDK's retry loop."""

    def __init__(self, cause: BaseException, attempts: int):
        super().__init__(str(cause))
        self.cause, self.attempts = cause, attempts


class RetryingOpenAI(openai.OpenAI):
    """``openai.OpenAI`` whose retries wait as ``policy`` says and are reported to ``on_retry(reason)``, where
    reason is the HTTP status ("429", "503"), "timeout" or "connection"."""

    def __init__(self, *, policy: RetryPolicy, on_retry: Callable[[str], None], **options: Any):
        super().__init__(max_retries=policy.max_retries, **options)
        self._policy, self._on_retry = policy, on_retry

    def _sleep_for_retry(
        self, *, retries_taken: int, max_retries: int, options: Any, response: httpx2.Response | None
    ) -> None:
        # The SDK calls this inside the except clause of the attempt that failed: a transport error is in flight.
        failure = sys.exc_info()[1]
        if response is not None:
            reason = str(response.status_code)
        elif isinstance(failure, httpx2.TimeoutException):
            reason = "timeout"
        else:
            reason = "connection"
        if isinstance(failure, httpx2.ConnectError) and retries_taken >= CONNECT_RETRIES:
            raise Unreachable(failure, retries_taken + 1)
        self._on_retry(reason)
        time.sleep(self._policy.delay(retries_taken, None if response is None else response.headers.get("retry-after")))
