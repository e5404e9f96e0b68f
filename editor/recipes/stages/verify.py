"""Stage `verify`: the export against the hooked base in transformers, and in stock vLLM when asked."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.io.atomic import write_text
from editor.recipes.context import RunContext

NAME, READS = "verify", ("export",)


def settings(ctx: RunContext) -> dict[str, Any]:
    return ctx.recipe.verify.model_dump()


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.io.manifest import read_manifest, write_manifest
    from editor.pipeline.verify import record, verify_transformers, verify_vllm

    export = ctx.path("export")
    # Results of an earlier verify of this export (say with vLLM switched on) must not outlive this one.
    manifest = read_manifest(export)
    manifest["verification"] = {}
    write_manifest(export, manifest)
    checks: dict[str, Any] = {}
    check = verify_transformers(export)
    record(export, "transformers", check)
    checks["transformers"] = asdict(check)
    if ctx.recipe.verify.vllm:
        served = verify_vllm(export, max_new_tokens=ctx.recipe.verify.max_new_tokens)
        record(export, "vllm", served)
        checks["vllm"] = asdict(served)
    if ctx.recipe.verify.llama_cpp:
        from editor.pipeline.gguf.verify import record_llama_cpp, verify_llama_cpp

        served_gguf = verify_llama_cpp(
            export, max_new_tokens=ctx.recipe.verify.max_new_tokens, threads=ctx.recipe.threads or 1
        )
        record_llama_cpp(export, served_gguf)
        checks["llama_cpp"] = asdict(served_gguf)
    write_text(out / "verify.json", json.dumps(checks, indent=2) + "\n")
    failed = [name for name, c in checks.items() if not c["passed"]]
    if failed:
        detail = check.describe() if "transformers" in failed else ""
        for engine in ("vllm", "llama_cpp"):
            if engine in failed:
                detail += f" {engine} {checks[engine]['identical']}/{checks[engine]['prompts']} identical"
        raise EditorError(
            f"{export}: verification failed in {', '.join(failed)} ({detail.strip()}); see {export}/editor_manifest.json"
        )
    return {"path": str(ctx.run_dir / "verify"), **{k: _summary(k, v) for k, v in checks.items()}}


def _summary(kind: str, check: dict[str, Any]) -> dict[str, Any]:
    if kind == "transformers":
        return {"max_logit_error": check["max_logit_error"], "passed": check["passed"]}
    return {"identical": check["identical"], "prompts": check["prompts"], "passed": check["passed"]}


def numbers(result: dict[str, Any]) -> str:
    text = f"transformers max logit error {result['transformers']['max_logit_error']:.2e}"
    if "vllm" in result:
        text += f"; vLLM {result['vllm']['identical']}/{result['vllm']['prompts']} greedy continuations identical"
    if "llama_cpp" in result:
        text += f"; llama.cpp {result['llama_cpp']['identical']}/{result['llama_cpp']['prompts']} identical"
    return text
