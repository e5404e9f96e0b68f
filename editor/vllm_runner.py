"""Run stock vLLM on an exported checkpoint: greedy continuations and first-token log-probs.

Run as ``python -m editor.vllm_runner REQUEST.json RESPONSE.json``. It lives in
its own process because vLLM spawns workers (so it must start under
``if __name__ == "__main__"``) and because nothing of editor may be loaded
into the engine: the export has to stand on its own.
"""

from __future__ import annotations

import json
import os
import sys


def main(request_path: str, response_path: str) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request = json.loads(open(request_path).read())
    prompts = request["prompts"]
    longest = max(len(p) for p in prompts) + request["max_new_tokens"]
    llm = LLM(model=request["model"], dtype="float32", max_model_len=max(256, longest), enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"], logprobs=1)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
    results = []
    for out in outputs:
        completion = out.outputs[0]
        first = completion.token_ids[0]
        results.append({"tokens": list(completion.token_ids), "first_logprob": completion.logprobs[0][first].logprob})
    with open(response_path, "w") as fh:
        json.dump({"results": results}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
