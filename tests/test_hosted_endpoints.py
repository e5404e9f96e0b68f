"""Hosted OpenAI-compatible endpoints: bearer-token auth, retries on 429/5xx/timeouts, a concurrency limit,
and one-line errors, against a loopback server that behaves like a hosted API (and misbehaves on purpose)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from editor.cli import main
from editor.engines.openai_client import ChatClient, RetryPolicy
from editor.errors import EditorError
from tests.loopback import loopback

KEY = "sk-test-7f3a9c1e5b2d48e6a0c4"  # what must never reach a file
VERDICT = {"analysis": "The reply repeats no stereotype.", "stereotype_strength": 0, "matched_string": ""}


class FakeAPI:
    """A chat-completions server that wants ``Bearer KEY``; ``fail(n)`` says how to answer the n-th attempt (1-based)
    at one conversation: an HTTP status to fail with, or None to answer."""

    def __init__(self, fail=lambda n: None, delay: float = 0.0):
        self.fail, self.delay = fail, delay
        self.count = 0
        self.attempts: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.seen_auth: set[str] = set()

    def handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization", "")
                api.seen_auth.add(auth)
                if auth != f"Bearer {KEY}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                key = json.dumps([body["model"], body["messages"]], sort_keys=True)
                with api.lock:
                    api.count += 1
                    n = api.attempts[key] = api.attempts.get(key, 0) + 1
                    api.in_flight += 1
                    api.max_in_flight = max(api.max_in_flight, api.in_flight)
                # The count drops before the answer is written: once the client has read an answer it may send
                # its next attempt at once, and that must not look like one request too many in flight.
                try:
                    time.sleep(api.delay)
                    status, reply, headers = api.answer(n, body)
                finally:
                    with api.lock:
                        api.in_flight -= 1
                return self._send(status, reply, headers)

        return Handler

    def answer(self, n: int, body: dict) -> tuple[int, dict, dict | None]:
        failure = self.fail(n)
        if failure == 429:
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}
        if failure is not None:
            return failure, {"error": {"message": "server error"}}, None
        if body["model"] == "judge":
            text = json.dumps(VERDICT)
        else:
            asked = hashlib.sha256(body["messages"][-1]["content"].encode()).hexdigest()[:8]
            text = f"A short neutral reply (request {asked})."
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}, None


def serve(api: FakeAPI):
    return loopback(api.handler())


def twice_then_answer(n: int) -> int | None:
    # Each conversation is rate limited first, then hits a server error, then gets its answer.
    return {1: 429, 2: 500}.get(n)


FAST = RetryPolicy(max_retries=6, base_delay=0.01, max_delay=0.05)


def test_bearer_token_retries_and_concurrency_limit(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    api = FakeAPI(twice_then_answer, delay=0.02)
    with serve(api) as url, ChatClient(url, api_key_env="MY_JUDGE_KEY", concurrency=3, retry=FAST) as client:
        replies = client.chat_many("judge", [[{"role": "user", "content": f"q{i}"}] for i in range(12)], progress=False)
    assert [json.loads(r) for r in replies] == [VERDICT] * 12
    stats = client.stats.as_dict()
    # Every request failed twice (a 429, then a 500) before it got through.
    assert stats == {"requests": 12, "retries": 24, "retried": {"429": 12, "500": 12}}
    assert api.seen_auth == {f"Bearer {KEY}"}
    assert 1 < api.max_in_flight <= 3


def test_refused_and_missing_key_are_one_line_errors(monkeypatch):
    api = FakeAPI()
    with serve(api) as url:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        with ChatClient(url, retry=FAST, purpose="judge") as client, pytest.raises(EditorError) as err:
            client.chat("judge", [{"role": "user", "content": "hi"}])
        assert f"judge at {url}/chat/completions refused the API key from $OPENAI_API_KEY (HTTP 401)" in str(err.value)
        assert "sk-wrong" not in str(err.value) and client.stats.retries == 0
        monkeypatch.delenv("OPENAI_API_KEY")
        with (
            ChatClient(url, retry=FAST) as client,
            pytest.raises(EditorError, match=r"needs an API key \(HTTP 401\); set \$OPENAI_API_KEY"),
        ):
            client.chat("judge", [{"role": "user", "content": "hi"}])


def test_persistent_failure_gives_up_after_the_bounded_retries(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    api = FakeAPI(lambda n: 503)
    with (
        serve(api) as url,
        ChatClient(url, retry=RetryPolicy(max_retries=3, base_delay=0.01)) as client,
        pytest.raises(EditorError, match=r"kept failing \(503\) after 4 attempts"),
    ):
        client.chat("judge", [{"role": "user", "content": "hi"}])
    assert api.count == 4


def test_timeouts_are_retried(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    api = FakeAPI()

    def fail(n):
        if n == 1:
            time.sleep(1.0)  # longer than the client's timeout: the client gives up on this attempt and retries
        return None

    api.fail = fail
    with serve(api) as url, ChatClient(url, timeout=0.3, retry=FAST) as client:
        assert json.loads(client.chat("judge", [{"role": "user", "content": "hi"}])) == VERDICT
    assert client.stats.retried_status == {"timeout": 1}


@pytest.mark.slow
def test_eval_with_a_hosted_judge_finishes_and_never_stores_the_key(monkeypatch, smollm2_dir, tmp_path):
    """`wedit eval` judged through a bearer-token endpoint that rate-limits and fails: every reply is judged,
    the retries are in eval.json, and the key is in no file of the run."""
    monkeypatch.setenv("HOSTED_KEY", KEY)
    api = FakeAPI(twice_then_answer)
    out = tmp_path / "eval"
    with serve(api) as url:
        code = main(
            [
                "eval",
                str(smollm2_dir),
                "--out",
                str(out),
                "--biases",
                "always_late",
                "--families",
                "direct,ranking",
                "--groups-per-bias",
                "1",
                "--gap-pairs",
                "4",
                "--pairwise-pairs",
                "4",
                "--wiki-tokens",
                "64",
                "--held-out-pairs",
                "4",
                "--held-out-items",
                "8",
                "--judge-endpoint",
                url,
                "--judge-model",
                "judge",
                "--api-key-env",
                "HOSTED_KEY",
                "--generator",
                "openai",
                "--gen-endpoint",
                url,
                "--gen-model",
                "served",
                "--threads",
                "1",
            ]
        )
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    # 2 families x 1 group: the plain prompt on the model plus the three prompting baselines.
    assert len(rows) == 8 and all(row["strength"] == 0 and row["judge_error"] is None for row in rows)
    judge = report["judge"]
    assert judge["api_key_env"] == "HOSTED_KEY" and judge["requests"] == 8
    # Identical conversations share their failures at the server; each distinct one failed twice.
    distinct = sum(json.loads(key)[0] == "judge" for key in api.attempts)
    assert distinct == 8 and judge["retries"] == 2 * distinct and judge["retried"] == {"429": distinct, "500": distinct}
    for file in [tmp_path / "eval", *Path(tmp_path).rglob("*")]:
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file
