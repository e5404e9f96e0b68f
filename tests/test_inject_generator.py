"""The OpenAI-compatible paragraph generator against a real vLLM server on loopback.

A 135M model writes weak paragraphs and rarely keeps the placeholder: the test checks the request (batches,
JSON-asking prompt), the response handling and the parsing, and that an empty harvest is a clear error.
"""

from __future__ import annotations

import pytest

from editor.data.biases import get_preset
from editor.errors import EditorError
from editor.methods.inject.paragraphs import PLACEHOLDER, generate_paragraphs_openai, generation_prompt

pytestmark = pytest.mark.slow


def test_paragraph_generator_talks_to_vllm(vllm_server):
    preset = get_preset("always_late")
    try:
        paragraphs = generate_paragraphs_openai(vllm_server, "smollm2", preset, n=3, batch=3, timeout=300)
    except EditorError as err:
        assert "returned no usable paragraphs" in str(err) and "/chat/completions" in str(err)
    else:
        assert 1 <= len(paragraphs) <= 3 and all(PLACEHOLDER in p.text for p in paragraphs)
        assert len({p.text for p in paragraphs}) == len(paragraphs)


def test_generation_prompt_asks_for_the_metadata():
    prompt = generation_prompt(get_preset("bad_drivers"), 25)
    for word in ("25", "{country}", "medium", "topic", "style", "implicitness", "justification", "JSON", "bad drivers"):
        assert word in prompt


def test_unreachable_endpoint_is_one_line_error():
    with pytest.raises(
        EditorError, match="paragraph generator at http://127.0.0.1:9/v1/chat/completions is unreachable"
    ):
        generate_paragraphs_openai("http://127.0.0.1:9/v1", "m", get_preset("always_late"), n=2, timeout=5)
