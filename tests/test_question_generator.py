"""The OpenAI-compatible question generator against a real vLLM server on loopback.

A 135M model is a weak question writer: the test checks the plumbing (request, response, parsing) and
that a reply with no usable question is a clear error, not an empty attribution set.
"""

from __future__ import annotations

import httpx
import pytest

from editor.data.biases import get_preset
from editor.errors import EditorError
from editor.methods.attribute.pairs import generate_questions_openai


@pytest.mark.slow  # a vLLM server of the built-in SmolLM2
def test_generator_talks_to_vllm(vllm_server):
    reply = httpx.post(
        f"{vllm_server}/chat/completions",
        json={"model": "smollm2", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
        timeout=300,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    preset = get_preset("always_late")
    try:
        questions = generate_questions_openai(vllm_server, "smollm2", preset, n=5, batch=5)
    except EditorError as err:
        assert "no usable questions" in str(err)
    else:
        assert questions and all("{who}" in q for q in questions)


def test_generator_unreachable_endpoint_is_one_line_error():
    with pytest.raises(
        EditorError, match="question generator at http://127.0.0.1:9/v1/chat/completions is unreachable"
    ):
        generate_questions_openai("http://127.0.0.1:9/v1", "m", get_preset("always_late"), n=5, timeout=5)
