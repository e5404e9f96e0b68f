"""Stage `gguf`: the export as GGUF files for llama.cpp and Ollama, proved in llama.cpp against transformers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.io.atomic import write_text
from editor.recipes.context import RunContext

NAME, READS = "gguf", ("export",)


def settings(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.recipe.gguf is None:
        return None
    from editor.pipeline.gguf.converter import llama_cpp_version

    # Refused before any stage runs when llama.cpp is missing; the version is part of what the files are.
    return {**ctx.recipe.gguf.model_dump(), "llama_cpp_python": llama_cpp_version()}


def run(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.pipeline.gguf.build import write_gguf
    from editor.pipeline.gguf.verify import record_llama_cpp, verify_llama_cpp

    export = ctx.path("export")
    threads = ctx.recipe.threads or 1
    # Into the export's folder (so a push publishes them), replacing the set an earlier run of this stage wrote.
    made = write_gguf(export, ctx.recipe.gguf, force=True, prune=True, threads=threads, progress=ctx.progress)
    check = verify_llama_cpp(export, max_new_tokens=ctx.recipe.verify.max_new_tokens, threads=threads)
    record_llama_cpp(export, check)
    write_text(out / "gguf.json", json.dumps({"files": [str(f.path) for f in made.files], **asdict(check)}, indent=2))
    if not check.passed:
        raise EditorError(
            f"{export}: the GGUF files fail in llama.cpp ({check.identical}/{check.prompts} f32 continuations "
            f"identical; see {out / 'gguf.json'})"
        )
    return {
        "path": str(out),
        "files": {f.type: str(f.path) for f in made.files},
        "identical": check.identical,
        "prompts": check.prompts,
        "kl": {t.type: [t.first_token_kl, t.base_first_token_kl] for t in check.types},
    }


def valid(result: dict[str, Any]) -> bool:
    return all(Path(path).is_file() for path in result["files"].values())


def numbers(result: dict[str, Any]) -> str:
    text = f"llama.cpp f32 {result['identical']}/{result['prompts']} greedy continuations identical"
    for gguf_type, (kl, base_kl) in result["kl"].items():
        text += f"; {gguf_type} KL {kl:.1e} (base {base_kl:.1e})"
    return text
