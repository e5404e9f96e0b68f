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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editor.errors import EditorError
from editor.io.manifest import locate_base, read_manifest, write_manifest

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
    max_logit_error: float  # the export as stored vs the hooked base
    mean_first_token_kl: float
    prompts: int
    stored_dtype: str
    tolerance: float  # on max_logit_error; for a 16-bit export over it, on bake_error instead
    passed: bool
    # 16-bit exports: the edited tensors recomputed in float32 and put in place of the stored ones (the bake
    # without its rounding) vs the hooked base, and whether the file holds exactly their rounding.
    bake_error: float | None = None
    rounding_exact: bool | None = None

    def describe(self) -> str:
        text = (
            f"max logit error {self.max_logit_error:.3e} (stored {self.stored_dtype}, fp32 compute), "
            f"mean first-token KL {self.mean_first_token_kl:.3e} over {self.prompts} prompts"
        )
        if self.bake_error is not None:
            held = "holds exactly its rounding" if self.rounding_exact else "does NOT hold its rounding"
            text += f"; the bake before rounding matches the hooks to {self.bake_error:.1e} and the file {held} to {self.stored_dtype}"
            if self.passed:
                text += f", so the error above is what storing in {self.stored_dtype} costs"
        return f"{text}: {'pass' if self.passed else 'FAIL'} (tolerance {self.tolerance:g})"


@dataclass
class VllmCheck:
    identical: int
    prompts: int
    max_first_token_logprob_diff: float
    max_new_tokens: int
    continuations: list[dict[str, Any]] = field(default_factory=list)
    required_identical: int = 7
    passed: bool = False


def _stored_dtype(export_dir: Path) -> str:
    config = json.loads((Path(export_dir) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def _has_tokenizer(path: Path) -> bool:
    return any(
        (path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    )


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


def verify_transformers(
    export_dir: Path, prompts: list[str] | None = None, tolerance: float | None = None, base: str | None = None
) -> TransformersCheck:
    """Compare the export with its base run under the plan's hooks. ``base`` overrides where the base is found."""
    from editor.core.hooks import hooked
    from editor.core.plan import parse_plan
    from editor.engines.loading import load_model
    from editor.io.checkpoint import Checkpoint

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    refuse_non_finite(export_dir)
    base_dir = locate_base(export_dir, manifest, base)
    plan = parse_plan(manifest.get("plan"), f"{export_dir}/editor_manifest.json")
    prompts = prompts or PROBE_PROMPTS
    batch = probe_batch(export_dir, prompts)
    mask = batch["attention_mask"].bool()
    last = batch["attention_mask"].sum(1) - 1
    rows = torch.arange(len(prompts))

    base_model = load_model(base_dir)
    with torch.no_grad(), hooked(base_model, plan.edits, Checkpoint.open(base_dir).info()):
        expected = base_model(**batch).logits
    del base_model
    export = load_model(export_dir)
    with torch.no_grad():
        got = export(**batch).logits

    err = float((expected - got).abs()[mask].max())
    p_log = torch.log_softmax(expected[rows, last], -1)
    q_log = torch.log_softmax(got[rows, last], -1)
    kl = float((p_log.exp() * (p_log - q_log)).sum(-1).mean())
    dtype = _stored_dtype(export_dir)
    tolerance = 1e-3 if tolerance is None else tolerance
    if err <= tolerance or dtype == "float32" or not plan.edits:
        del export
        return TransformersCheck(err, kl, len(prompts), dtype, tolerance, passed=err <= tolerance)
    # A 16-bit export rounds every edited tensor once; an ablation re-rounds nearly every residual writer,
    # which alone moves logits by ~0.1 on SmolLM2. So the bake is proved at full precision (fp32 edited
    # tensors in place of the stored ones must match the hooks to fp32 noise) and the file is proved to
    # hold exactly their rounding; the stored model's own error is reported, with a KL bar on behaviour.
    # (An add_token hook rounds its row to the stored dtype itself, so it passes by the first test.)
    rounding_exact = _load_unrounded_bake(export, base_dir, export_dir, plan.edits)
    with torch.no_grad():
        exact = export(**batch).logits
    del export
    bake_error = float((expected - exact).abs()[mask].max())
    passed = bake_error <= tolerance and rounding_exact and kl <= 1e-3
    return TransformersCheck(err, kl, len(prompts), dtype, tolerance, passed, bake_error, rounding_exact)


def refuse_non_finite(export_dir: Path) -> None:
    """An export holding NaN/Inf cannot be verified: name the first such tensor (reads every float tensor once)."""
    from editor.io.checkpoint import Checkpoint

    found = next(Checkpoint.open(export_dir).non_finite(), None)
    if found is not None:
        name, count = found
        raise EditorError(
            f"{export_dir}: tensor {name} holds {count} NaN/Inf values (an untouched tensor is copied from the base "
            "as it is); this export cannot be verified: fix the base checkpoint and export again"
        )


def _load_unrounded_bake(model, base_dir: Path, export_dir: Path, edits) -> bool:
    """Put the plan's edited tensors, computed in float32 from the base, into ``model`` (the loaded export);
    True when every one of them is stored in the export as exactly its rounding to the stored dtype."""
    from editor.core.bake import compile_plan, serial_blas
    from editor.io.checkpoint import Checkpoint
    from editor.io.tensor_file import from_float32

    base, stored = Checkpoint.open(base_dir), Checkpoint.open(export_dir)
    program = compile_plan(edits, base.info())
    program.read_source = base.read_raw
    params = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    prefix = getattr(model, "base_model_prefix", "")
    exact = True
    for name in sorted(program.touched | set(program.new_tensors)):
        with serial_blas():  # as the export computed them
            if name in program.new_tensors:
                values = program.materialize_new_float32(name, base.read_raw)
            else:
                values = program.apply_float32(name, base.read_raw(name))
        exact &= bool(np.array_equal(stored.read_raw(name), from_float32(values, stored.metas[name].dtype)))
        candidates = (name, f"{prefix}.{name}", name.removeprefix(f"{prefix}."))
        target = next((params[c] for c in candidates if c in params), None)
        if target is None:
            raise EditorError(
                f"{export_dir}: edited tensor {name} is not a parameter of the loaded model; cannot verify"
            )
        with torch.no_grad():
            target.copy_(torch.from_numpy(values).reshape(target.shape))
    return exact


def _greedy_transformers(export_dir: Path, prompt_ids: list[list[int]], max_new_tokens: int):
    from editor.engines.loading import load_model

    model = load_model(export_dir)
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
                pad_token_id=model.config.eos_token_id
                if model.config.pad_token_id is None
                else model.config.pad_token_id,
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


def multimodal_request(export_dir: Path, what: str) -> dict:
    """For a multimodal wrapper, what vLLM needs to serve its text: no image per prompt (so no image processor
    files), and torchvision, which vLLM imports for every vision model; refused in one line without it."""
    import importlib.util

    from editor.core.architectures import ARCHITECTURES

    model_type = json.loads((export_dir / "config.json").read_text()).get("model_type")
    arch = ARCHITECTURES.get(model_type or "")
    if arch is None or arch.text_config is None:
        return {}
    if importlib.util.find_spec("torchvision") is None:
        raise EditorError(
            f"{what}: vLLM loads a {model_type} checkpoint (vision tower included) only with torchvision, which "
            "this environment lacks; install the torchvision build made for this torch (CPU: the "
            "download.pytorch.org/whl/cpu index), or verify with transformers and --llama-cpp"
        )
    return {"limit_mm_per_prompt": {"image": 0}}


def verify_vllm(
    export_dir: Path, prompts: list[str] | None = None, max_new_tokens: int = 24, timeout: int = 900
) -> VllmCheck:
    """Run the export in stock vLLM (a subprocess) and compare with transformers."""
    from transformers import AutoTokenizer

    from editor.engines.vllm_worker import run_vllm

    export_dir = Path(export_dir)
    prompts = prompts or PROBE_PROMPTS
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    request = {"model": str(export_dir), "prompts": prompt_ids, "mode": "greedy", "max_new_tokens": max_new_tokens}
    request |= multimodal_request(export_dir, "wedit verify --vllm")
    served = run_vllm(request, what="wedit verify --vllm", timeout=timeout)
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
