"""The chat client on the OpenAI SDK, against a loopback server that answers from a script: what it sends (the key
from the named variable only, nothing without one), what it retries and counts, how long it waits, and the one
line it fails with."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from editor.engines.openai_client import ChatClient, RetryPolicy, chat_completion
from editor.errors import EditorError
from tests.loopback import loopback

HI = [{"role": "user", "content": "hi"}]
FAST = RetryPolicy(max_retries=4, base_delay=0.01, max_delay=0.05)
KEY = "sk-test-0c4a9e17d2b85f36"


def completion(text: str = "hello") -> tuple[int, dict, bytes]:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def failure(status: int, headers: dict | None = None, message: str = "nope") -> tuple[int, dict, bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps({"error": {"message": message}}).encode(),
    )


DROP = (0, {}, b"")  # close the connection without an answer


@dataclass
class Seen:
    headers: dict[str, str]
    body: dict
    at: float


@dataclass
class Script:
    """Answers the n-th request (0-based) with ``answer(n)``; records what each request carried."""

    answer: Callable[[int], tuple[int, dict, bytes]]
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve(script: Script) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                n = len(script.seen)
                script.seen.append(Seen({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
            status, headers, data = script.answer(n)
            if status == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    with loopback(Handler) as url:
        yield url


@pytest.fixture
def no_keys(monkeypatch):
    for name in ("OPENAI_API_KEY", "MY_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_503_then_200_is_one_request_and_one_counted_retry(no_keys):
    script = Script(lambda n: failure(503) if n == 0 else completion("fine"))
    with serve(script) as url, ChatClient(url, retry=FAST) as client:
        assert client.chat("m", HI, temperature=0.5, max_tokens=7, seed=3) == "fine"
    assert client.stats.as_dict() == {"requests": 1, "retries": 1, "retried": {"503": 1}}
    assert len(script.seen) == 2
    # The body is what the hand-written client sent: nothing the SDK adds on its own.
    assert script.seen[1].body == {"model": "m", "messages": HI, "temperature": 0.5, "max_tokens": 7, "seed": 3}


def test_dropped_connections_and_errors_are_counted_by_reason(no_keys):
    answers = {0: DROP, 1: failure(429, {"Retry-After": "0"}), 2: failure(502)}
    script = Script(lambda n: answers.get(n, completion()))
    with serve(script) as url, ChatClient(url, retry=FAST) as client:
        assert client.chat("m", HI) == "hello"
    assert client.stats.as_dict() == {"requests": 1, "retries": 3, "retried": {"429": 1, "502": 1, "connection": 1}}


def test_retry_after_is_honoured_and_capped(no_keys):
    slow = RetryPolicy(max_retries=2, base_delay=0.0, max_delay=0.6)  # backoff alone would not wait at all
    script = Script(lambda n: failure(429, {"Retry-After": "0.4"}) if n == 0 else completion())
    with serve(script) as url, ChatClient(url, retry=slow) as client:
        client.chat("m", HI)
    assert 0.4 <= script.seen[1].at - script.seen[0].at < 2
    script = Script(lambda n: failure(503, {"Retry-After": "100"}) if n == 0 else completion())
    with serve(script) as url, ChatClient(url, retry=slow) as client:
        client.chat("m", HI)
    assert 0.6 <= script.seen[1].at - script.seen[0].at < 3  # 100 s asked, max_delay waited
    assert client.stats.retried_status == {"503": 1}


def test_retry_after_beyond_two_minutes_is_not_waited_for(no_keys):
    # The SDK does not retry a server that asks for more than two minutes: one line, at once.
    script = Script(lambda n: failure(429, {"Retry-After": "3600"}, "quota exhausted"))
    with serve(script) as url, ChatClient(url, retry=FAST) as client, pytest.raises(EditorError) as err:
        client.chat("m", HI)
    assert (
        str(err.value)
        == f"chat endpoint at {url}/chat/completions answered HTTP 429 (quota exhausted); check --endpoint and --model"
    )
    assert len(script.seen) == 1 and client.stats.retries == 0


def test_refused_key_is_one_line_naming_the_variable_not_the_key(no_keys):
    no_keys.setenv("MY_KEY", KEY)
    script = Script(lambda n: failure(401, message="invalid api key"))
    with (
        serve(script) as url,
        ChatClient(url, api_key_env="MY_KEY", retry=FAST, purpose="judge") as client,
        pytest.raises(EditorError) as err,
    ):
        client.chat("m", HI)
    message = str(err.value)
    assert message == (
        f"judge at {url}/chat/completions refused the API key from $MY_KEY (HTTP 401); "
        "check the key and its access to the model; check --endpoint and --model"
    )
    assert KEY not in message and "\n" not in message and len(script.seen) == 1
    script = Script(lambda n: failure(403))
    with serve(script) as url, ChatClient(url, retry=FAST) as client, pytest.raises(EditorError) as err:
        client.chat("m", HI)
    assert "needs an API key (HTTP 403); set $OPENAI_API_KEY, or name another variable with --api-key-env" in str(
        err.value
    )


def test_key_comes_from_the_named_variable_only(no_keys):
    no_keys.setenv("OPENAI_API_KEY", "sk-default-variable")
    no_keys.setenv("OPENAI_ORG_ID", "org-ambient")
    no_keys.setenv("OPENAI_CUSTOM_HEADERS", "Authorization: Bearer sk-ambient\nX-Extra: 1")
    no_keys.setenv("MY_KEY", KEY)
    script = Script(lambda n: completion())
    with serve(script) as url:
        with ChatClient(url, api_key_env="MY_KEY", retry=FAST) as client:
            client.chat("m", HI)
        no_keys.delenv("MY_KEY")
        with ChatClient(url, api_key_env="MY_KEY", retry=FAST) as client:
            client.chat("m", HI)
        no_keys.delenv("OPENAI_API_KEY")
        assert chat_completion(url, "m", HI) == "hello"
    with_key, without, keyless = (seen.headers for seen in script.seen)
    assert with_key["authorization"] == f"Bearer {KEY}"
    # MY_KEY unset: no other variable stands in for it, and a server that needs no key (vLLM, llama.cpp) is served.
    assert "authorization" not in without and "authorization" not in keyless
    assert all("openai-organization" not in seen.headers for seen in script.seen)


def test_key_is_read_when_the_client_is_made(no_keys):
    script = Script(lambda n: completion())
    with serve(script) as url, ChatClient(url, retry=FAST) as client:
        no_keys.setenv("OPENAI_API_KEY", KEY)  # too late for this client
        client.chat("m", HI)
    assert "authorization" not in script.seen[0].headers


def test_unreachable_port_is_one_line_after_three_attempts(no_keys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    started = time.monotonic()
    client = ChatClient(f"http://127.0.0.1:{port}/v1", retry=RetryPolicy(base_delay=0.01))
    with client, pytest.raises(EditorError) as err:
        client.chat("m", HI)
    message = str(err.value)
    assert message.startswith(
        f"chat endpoint at http://127.0.0.1:{port}/v1/chat/completions is unreachable (ConnectError"
    )
    assert message.endswith("after 3 attempts; check --endpoint and --model") and "\n" not in message
    # A refused connection gets two more tries, not the six of the policy.
    assert client.stats.as_dict() == {"requests": 1, "retries": 2, "retried": {"connection": 2}}
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (
            (200, {"Content-Type": "application/json"}, b'{"id": "x"}'),
            "did not answer a chat completion (it holds no choices[0].message)",
        ),
        ((200, {"Content-Type": "application/json"}, b'{"choices": []}'), "it holds no choices[0].message"),
        (
            (200, {"Content-Type": "application/json"}, b'{"choices": [{"message": {"content": [1]}}]}'),
            "its content is a list",
        ),
        ((200, {"Content-Type": "text/plain"}, b"Welcome to nginx"), "a body that is not JSON: 'Welcome to nginx'"),
        (
            (200, {"Content-Type": "application/json"}, b"{not json"),
            "did not answer a chat completion (JSONDecodeError",
        ),
        (failure(400, message="unknown model m"), "answered HTTP 400 (unknown model m)"),
        ((404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>"), "answered HTTP 404 (<h1>Not Found</h1>)"),
    ],
)
def test_answers_that_are_not_completions_are_one_line(no_keys, answer, why):
    script = Script(lambda n: answer)
    with serve(script) as url, ChatClient(url, retry=FAST) as client, pytest.raises(EditorError) as err:
        client.chat("m", HI)
    assert why in str(err.value) and "\n" not in str(err.value)
    assert len(script.seen) == 1 and client.stats.retries == 0


def test_persistent_5xx_and_timeouts_name_the_attempts(no_keys):
    script = Script(lambda n: failure(500))
    with serve(script) as url, ChatClient(url, retry=FAST) as client, pytest.raises(EditorError) as err:
        client.chat("m", HI)
    assert "kept failing (500) after 5 attempts" in str(err.value) and len(script.seen) == 5

    def slow(n):
        time.sleep(0.5)
        return completion()

    script = Script(slow)
    policy = RetryPolicy(max_retries=1, base_delay=0.01)
    with serve(script) as url, ChatClient(url, timeout=0.2, retry=policy) as client, pytest.raises(EditorError) as err:
        client.chat("m", HI)
    assert "kept failing (timeout) after 2 attempts" in str(err.value)
    assert client.stats.retried_status == {"timeout": 1}
