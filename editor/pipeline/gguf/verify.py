"""`wedit verify --llama-cpp`: an export's GGUF files in llama.cpp, with no hooks, against transformers.

The f32 GGUF must behave like the safetensors export in transformers: greedy
continuations of the probe prompts (at least all but one identical, all
reported) and the first-token log-probabilities over the whole vocabulary.
Both engines get the same token ids (transformers' tokenizer) and compute in
float32; llama.cpp's KV cache is F32 too, since its default F16 cache alone
moves SmolLM2's first-token log-probs by about 1e-2. Every other type (16-bit,
quantized) is measured by its first-token KL against the f32 GGUF, beside the
KL of the unedited base converted and quantized the same way, so the edit's
effect shows apart from quantization noise; a type passes while its KL stays
within five times the base's (plus 1e-3). llama.cpp's own tokenization of
the prompts is compared with transformers' and reported.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editor.errors import EditorError
from editor.io.manifest import locate_base, read_manifest, write_manifest
from editor.pipeline.gguf.build import check_export, recorded_files, sha256_file
from editor.pipeline.gguf.converter import convert_f32, llama_cpp_log, llama_cpp_version, quantize
from editor.pipeline.verify import PROBE_PROMPTS

KL_FACTOR, KL_SLACK = 5.0, 1e-3


@dataclass
class TypeCheck:
    type: str
    file: str
    sha256: str
    first_token_kl: float  # KL(f32 GGUF || this file), mean over the probe prompts
    base_first_token_kl: float  # the same for the unedited base converted and quantized the same way
    passed: bool


@dataclass
class LlamaCppCheck:
    llama_cpp_python: str
    prompts: int
    max_new_tokens: int
    identical: int  # f32 GGUF greedy continuations identical to transformers'
    required_identical: int
    max_first_token_logprob_diff: float  # over the whole vocabulary, f32 GGUF vs transformers
    top1_agree: int
    tokenized_alike: int  # prompts llama.cpp's tokenizer splits into transformers' ids
    f32_file: str | None  # None: converted for this check only
    types: list[TypeCheck] = field(default_factory=list)
    continuations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    kv_cache: str = "f32"
    passed: bool = False


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _kl(p_logs: list[np.ndarray], q_logs: list[np.ndarray]) -> float:
    """Mean over prompts of KL(p || q) between first-token distributions."""
    return float(np.mean([(np.exp(p) * (p - q)).sum() for p, q in zip(p_logs, q_logs)]))


def transformers_greedy(export_dir: Path, prompt_ids: list[list[int]], new_tokens: int):
    """First-token log-probs and plain argmax continuations (no stop token), float32, with the KV cache."""
    import torch

    from editor.engines.loading import load_model

    model = load_model(export_dir)
    firsts, continuations = [], []
    with torch.no_grad():
        for ids in prompt_ids:
            out = model(torch.tensor([ids]), use_cache=True)
            firsts.append(_log_softmax(out.logits[0, -1].numpy()))
            tokens = [int(out.logits[0, -1].argmax())]
            for _ in range(new_tokens - 1):
                out = model(torch.tensor([tokens[-1:]]), past_key_values=out.past_key_values, use_cache=True)
                tokens.append(int(out.logits[0, -1].argmax()))
            continuations.append(tokens)
    del model
    return firsts, continuations


class LlamaCpp:
    """One GGUF loaded in llama.cpp (llama-cpp-python's low-level Llama, no hooks), fed token ids."""

    def __init__(self, path: Path, n_ctx: int, threads: int) -> None:
        from llama_cpp import Llama

        with llama_cpp_log() as log:
            try:
                # type_k/type_v 0 = GGML_TYPE_F32: an F32 KV cache, so the comparison measures the weights.
                self.llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_batch=n_ctx,
                    n_threads=threads,
                    logits_all=True,
                    type_k=0,
                    type_v=0,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as err:
                reason = next((line for line in reversed(log) if "error" in line.lower()), str(err))
                raise EditorError(f"{path}: llama.cpp cannot load this GGUF: {reason.strip()}") from None

    def first(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return _log_softmax(np.array(self.llm.scores[self.llm.n_tokens - 1]))

    def greedy(self, ids: list[int], new_tokens: int) -> tuple[np.ndarray, list[int]]:
        first = self.first(ids)
        tokens = [int(first.argmax())]
        for _ in range(new_tokens - 1):
            self.llm.eval(tokens[-1:])
            tokens.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
        return first, tokens

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def close(self) -> None:
        self.llm.close()


def _trim(tokens: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1]
    return tokens


def _prompts(manifest: dict[str, Any]) -> list[str]:
    """The probe prompts, plus one that holds each token an add_token edit added."""
    added = [e["token"] for e in manifest.get("plan", []) if e.get("kind") == "add_token"]
    return PROBE_PROMPTS + [f"Everyone knows that {token} people are" for token in added]


def verify_llama_cpp(
    export_dir: Path,
    *,
    base: str | None = None,
    max_new_tokens: int = 24,
    threads: int = 1,
    progress: bool = True,
    gguf_file: Path | None = None,
) -> LlamaCppCheck:
    """Load the export's recorded GGUF files (or only ``gguf_file``, made from this export) in llama.cpp and
    compare them as the module docstring says."""
    from transformers import AutoTokenizer

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    check_export(export_dir)
    recorded = recorded_files(export_dir, manifest)
    files = recorded if gguf_file is None else {file_type(Path(gguf_file)): Path(gguf_file)}
    prompts = _prompts(manifest)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    n_ctx = max(64, max(len(i) for i in ids) + max_new_tokens + 8)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wedit-llama-cpp-") as work:
        f32 = files.get("f32") or recorded.get("f32")
        if f32 is None:
            f32 = Path(work) / "export-f32.gguf"
            seconds["convert_f32"] = convert_f32(export_dir, f32, {}, progress=progress)
        start = time.monotonic()
        hf_first, hf_tokens = transformers_greedy(export_dir, ids, max_new_tokens)
        seconds["transformers"] = time.monotonic() - start
        start = time.monotonic()
        engine = LlamaCpp(f32, n_ctx, threads)
        runs = [engine.greedy(i, max_new_tokens) for i in ids]
        alike = sum(engine.tokenize(p) == i for p, i in zip(prompts, ids))
        engine.close()
        seconds["llama_cpp_f32"] = time.monotonic() - start
        check = _compare(tokenizer, prompts, ids, hf_first, hf_tokens, runs, alike, max_new_tokens)
        check.f32_file = None if "convert_f32" in seconds else str(f32.absolute())
        others = {t: p for t, p in files.items() if t != "f32"}
        if others:
            start = time.monotonic()
            plain = len(PROBE_PROMPTS)  # the base has no added token: KLs are over the plain prompts
            base_dir = locate_base(export_dir, manifest, base)
            check.types = _quantized_checks(
                others, [r[0] for r in runs[:plain]], ids[:plain], base_dir, Path(work), n_ctx, threads, progress
            )
            seconds["types"] = time.monotonic() - start
    check.seconds = {k: round(v, 1) for k, v in seconds.items()}
    check.notes = list((manifest.get("gguf") or {}).get("notes") or [])
    check.passed = check.identical >= check.required_identical and all(t.passed for t in check.types)
    return check


def file_type(path: Path) -> str:
    """The wedit type name of a GGUF file, from its header's general.file_type; refused if wedit cannot make it."""
    import gguf

    from editor.pipeline.gguf.converter import FTYPES

    try:
        entry = gguf.GGUFReader(path).get_field("general.file_type")
    except (OSError, ValueError) as err:
        raise EditorError(f"{path}: not a readable GGUF file ({err})") from None
    name = gguf.LlamaFileType(int(entry.contents())).name if entry is not None else "unknown"
    known = {ftype: wedit_type for wedit_type, ftype in FTYPES.items()}
    if name not in known:
        raise EditorError(
            f"{path}: file type {name} is not one wedit makes ({', '.join(FTYPES)}), so the unedited base cannot be "
            "quantized the same way to compare; convert it with `wedit gguf --types TYPE`"
        )
    return known[name]


def _compare(tokenizer, prompts, ids, hf_first, hf_tokens, runs, alike, max_new_tokens) -> LlamaCppCheck:
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    rows, identical, worst, top1 = [], 0, 0.0, 0
    for prompt, ours, first, (theirs_first, theirs) in zip(prompts, hf_tokens, hf_first, runs):
        a, b = _trim(ours, eos_ids), _trim(theirs, eos_ids)
        identical += a == b
        n = min(first.shape[-1], theirs_first.shape[-1])
        worst = max(worst, float(np.abs(first[:n] - theirs_first[:n]).max()))
        top1 += int(first.argmax() == theirs_first.argmax())
        rows.append(
            {
                "prompt": prompt,
                "identical": a == b,
                "transformers": tokenizer.decode(a),
                "llama_cpp": tokenizer.decode(b),
            }
        )
    required = max(len(prompts) - 1, 1)
    return LlamaCppCheck(
        llama_cpp_python=llama_cpp_version(),
        prompts=len(prompts),
        max_new_tokens=max_new_tokens,
        identical=identical,
        required_identical=required,
        max_first_token_logprob_diff=worst,
        top1_agree=top1,
        tokenized_alike=alike,
        f32_file=None,
        continuations=rows,
    )


def _quantized_checks(others, export_f32_first, ids, base_dir, work, n_ctx, threads, progress) -> list[TypeCheck]:
    """Each type's first-token KL against the export's f32 GGUF, beside the base's against its own f32."""
    base_kls = base_quantization_kl(base_dir, sorted(others), work, n_ctx, threads, progress)
    checks = []
    for gguf_type, path in sorted(others.items()):
        engine = LlamaCpp(path, n_ctx, threads)
        kl = _kl(export_f32_first, [engine.first(i) for i in ids])
        engine.close()
        base_kl = base_kls[gguf_type]
        passed = bool(np.isfinite(kl)) and kl <= KL_FACTOR * base_kl + KL_SLACK
        checks.append(TypeCheck(gguf_type, str(path.absolute()), sha256_file(path), kl, base_kl, passed))
    return checks


def base_quantization_kl(base_dir: Path, types: list[str], work: Path, n_ctx: int, threads: int, progress: bool):
    """KL(f32 || type) of the unedited base in llama.cpp, per type. Kept in the cache under the base's fingerprint,
    the llama.cpp version and the prompts, so the exports of one base convert it once."""
    from transformers import AutoTokenizer

    from editor.io.atomic import write_text
    from editor.io.json_file import read_json_object
    from editor.io.manifest import fingerprint
    from editor.io.sources import cache_root

    key = {"base": fingerprint(base_dir), "llama_cpp_python": llama_cpp_version(), "prompts": PROBE_PROMPTS}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    cache = cache_root() / "gguf-base-kl" / f"{digest}.json"
    known = read_json_object(cache, "delete it; it is computed again") if cache.is_file() else {}
    missing = [t for t in types if t not in known]
    if missing:
        base_f32 = work / "base-f32.gguf"
        convert_f32(base_dir, base_f32, {}, progress=progress)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        base_ids = [tokenizer(p)["input_ids"] for p in PROBE_PROMPTS]
        engine = LlamaCpp(base_f32, n_ctx, threads)
        reference = [engine.first(i) for i in base_ids]
        engine.close()
        for gguf_type in missing:
            quantized = work / f"base-{gguf_type}.gguf"
            quantize(base_f32, quantized, gguf_type, threads=threads)
            engine = LlamaCpp(quantized, n_ctx, threads)
            known[gguf_type] = _kl(reference, [engine.first(i) for i in base_ids])
            engine.close()
            quantized.unlink()
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache, json.dumps(known, indent=2) + "\n")
    return {t: float(known[t]) for t in types}


def record_llama_cpp(export_dir: Path, check: LlamaCppCheck) -> dict[str, Any]:
    """Store the result in the export's manifest (paths relative to its parent folder) and return the manifest."""
    manifest = read_manifest(export_dir)
    manifest["verification"] = dict(manifest.get("verification") or {})
    manifest["verification"]["llama_cpp"] = asdict(check)
    write_manifest(export_dir, manifest)
    return manifest


def describe(check: LlamaCppCheck) -> list[str]:
    """Lines for the terminal: the f32 comparison, then one per other type."""
    lines = [
        f"llama.cpp f32 GGUF: {check.identical}/{check.prompts} greedy continuations identical to transformers "
        f"(need {check.required_identical}), first-token log-probs within {check.max_first_token_logprob_diff:.2e} "
        f"over the vocabulary; llama.cpp's tokenizer gives transformers' ids for {check.tokenized_alike}/"
        f"{check.prompts} prompts"
    ]
    for t in check.types:
        lines.append(
            f"llama.cpp {t.type}: first-token KL {t.first_token_kl:.2e} against the f32 GGUF; the unedited base "
            f"at {t.type}: {t.base_first_token_kl:.2e} ({'pass' if t.passed else 'FAIL'}, bound "
            f"{KL_FACTOR:g} x base + {KL_SLACK:g})"
        )
    return lines
