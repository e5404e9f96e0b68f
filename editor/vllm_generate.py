"""Generate with stock vLLM from token ids: ``python -m editor.vllm_generate REQUEST.json RESPONSE.json``.

A separate process because vLLM spawns workers (it must start under
``if __name__ == "__main__"``). Request: {"model", "prompts": [[ids]], "params":
{"max_new_tokens", "temperature", "seed"}}; response: {"texts": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(request_path: str, response_path: str) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request = json.loads(Path(request_path).read_text())
    prompts, params = request["prompts"], request["params"]
    longest = max(len(p) for p in prompts) + params["max_new_tokens"]
    llm = LLM(
        model=request["model"], dtype="float32", max_model_len=max(256, longest), seed=params["seed"],
        tensor_parallel_size=request.get("tensor_parallel_size", 1),
    )
    sampling = SamplingParams(
        temperature=params["temperature"], top_p=1.0, max_tokens=params["max_new_tokens"], seed=params["seed"]
    )
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling)
    Path(response_path).write_text(json.dumps({"texts": [out.outputs[0].text for out in outputs]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
