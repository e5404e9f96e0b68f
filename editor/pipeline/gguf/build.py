"""`wedit gguf`: refuse what llama.cpp cannot load, convert an export to GGUF files, record them in its manifest.

One conversion per call: llama.cpp's converter writes an f32 GGUF (the exact
weights, the reference every other type is measured against), and llama.cpp's
quantizer makes every other type from it. Files are built beside their
destination and renamed into place. By default they go into the export's own
folder (``NAME-TYPE.gguf``), so ``wedit push`` publishes them with the model;
the manifest records each file (size, sha256, seconds) and the card gains the
llama.cpp and Ollama lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editor import __version__
from editor.core.gguf_rules import Verdict, llama_cpp_verdict
from editor.core.model_info import ModelInfo
from editor.errors import EditorError
from editor.io.atomic import fsync_dir, fsync_file
from editor.io.manifest import read_manifest, write_manifest
from editor.pipeline.gguf.converter import convert_f32, converter_dir, llama_cpp_version, quantize
from editor.pipeline.settings import GgufSettings


@dataclass
class GgufFile:
    type: str
    path: Path
    bytes: int
    sha256: str
    seconds: float  # conversion (f32) or quantization (other types)


@dataclass
class GgufResult:
    files: list[GgufFile]
    gguf_arch: str | None
    convert_seconds: float
    notes: list[str] = field(default_factory=list)


def verdict_for(info: ModelInfo, tensors: Iterable[str], config: dict[str, Any]) -> Verdict:
    """The llama.cpp rules applied to a whole checkpoint: its HF class, every tensor, its own lm_head if untied."""
    architecture = (config.get("architectures") or [info.arch.causal_lm_class])[0]
    names = list(tensors)
    tied = config.get(info.arch.tie_key, info.arch.tied_by_default)
    head = next((n for n in names if n.endswith(f"{info.arch.lm_head}.weight")), None) if not tied else None
    return llama_cpp_verdict(architecture, names, info.num_layers, whole=True, lm_head=head, config=config)


def check_export(export_dir: Path) -> Verdict:
    """Refuse, before any conversion, an export whose GGUF llama.cpp would not load."""
    from editor.io.checkpoint import Checkpoint

    info = Checkpoint.open(export_dir).info()
    verdict = verdict_for(info, info.tensors, info.config)
    if not verdict.serves:
        raise EditorError(f"{export_dir}: llama.cpp cannot serve this export: {verdict.reason}; nothing was converted")
    return verdict


def tokenizer_notes(manifest: dict[str, Any]) -> list[str]:
    """What differs in llama.cpp's tokenizer: an added token loses its lstrip (GGUF has no place for it)."""
    tokens = [e["token"] for e in manifest.get("plan", []) if e.get("kind") == "add_token"]
    return [
        f"llama.cpp (and so Ollama) does not keep the added token {token}'s lstrip: text with a space before it "
        f"tokenizes as a space token plus {token}, where transformers swallows the space; write it without the "
        "space, or send token ids"
        for token in tokens
    ]


def gguf_keys(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's summary for the GGUF header: general.description and wedit.* keys (strings only)."""
    base = manifest["base_model"]
    named = base.get("hub_id") or (base.get("source") if base.get("source") not in ("local", "gguf") else None)
    base_name = named or f"a local {'GGUF file' if base.get('source') == 'gguf' else 'checkpoint'}"
    edits = [str(e) for e in manifest.get("edits_described", [])]
    version = str(manifest.get("editor_version", ""))
    description = f"{base_name} with weights edited by wedit {version}: " + "; ".join(edits)
    plan = json.dumps(manifest.get("plan", []), sort_keys=True, separators=(",", ":"))
    return {
        "general.description": description if len(description) <= 2000 else description[:1997] + "...",
        "wedit.editor_version": version,
        "wedit.gguf_tool": f"wedit {__version__}; llama.cpp's convert_hf_to_gguf.py and quantizer from "
        f"llama-cpp-python {llama_cpp_version()}",
        "wedit.base_model": base_name,
        "wedit.base_fingerprint": json.dumps(base.get("fingerprint") or {}, sort_keys=True),
        "wedit.edits": "\n".join(edits),
        "wedit.plan_sha256": hashlib.sha256(plan.encode()).hexdigest(),
        "wedit.config_updates": json.dumps(manifest.get("config_updates") or {}, sort_keys=True),
    }


def output_paths(export_dir: Path, types: Sequence[str], out: Path | None) -> dict[str, Path]:
    """``out`` as named for one type, ``out``'s stem plus ``-TYPE`` for several; default NAME-TYPE.gguf in the export."""
    if out is None:
        return {t: export_dir / f"{export_dir.name}-{t}.gguf" for t in types}
    if out.suffix != ".gguf":
        raise EditorError(f"--out {out}: name a .gguf file (several types add -TYPE to its name)")
    if len(types) == 1:
        return {types[0]: out}
    return {t: out.with_name(f"{out.stem}-{t}.gguf") for t in types}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_files(export_dir: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """The GGUF files the manifest lists that are still there (paths are relative to the export's parent folder)."""
    files = (manifest.get("gguf") or {}).get("files") or {}
    root = Path(export_dir).absolute().parent
    return {t: root / entry["file"] for t, entry in files.items() if (root / entry["file"]).is_file()}


def write_gguf(
    export_dir: Path,
    settings: GgufSettings,
    *,
    out: Path | None = None,
    force: bool = False,
    prune: bool = False,
    threads: int = 1,
    progress: bool = True,
) -> GgufResult:
    """Convert ``export_dir`` into the settings' types. ``prune``: remove GGUF files an earlier call recorded in the
    export's folder for types no longer asked for (a recipe's run replaces its set)."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    verdict = check_export(export_dir)
    paths = output_paths(export_dir, settings.types, out)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not force:
        raise EditorError(f"{existing[0]} already exists; choose another --out or pass --force to replace it")
    converter_dir()  # fetched now, before any long work, so an offline machine fails at once
    folder = next(iter(paths.values())).parent
    folder.mkdir(parents=True, exist_ok=True)
    files: list[GgufFile] = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".wedit-gguf-") as work:
        f32 = Path(work) / "f32.gguf"
        convert_seconds = convert_f32(export_dir, f32, gguf_keys(manifest), progress=progress)
        for gguf_type, target in paths.items():  # f32 last: every other type is made from it
            if gguf_type == "f32":
                continue
            staged = Path(work) / f"{gguf_type}.gguf"
            seconds = quantize(f32, staged, gguf_type, threads=threads)
            files.append(_place(staged, target, gguf_type, seconds))
        if "f32" in paths:
            files.append(_place(f32, paths["f32"], "f32", convert_seconds))
    result = GgufResult(files, verdict.gguf_arch, convert_seconds, tokenizer_notes(manifest))
    _record(export_dir, manifest, result, prune)
    return result


def _place(staged: Path, target: Path, gguf_type: str, seconds: float) -> GgufFile:
    fsync_file(staged)
    os.replace(staged, target)  # same file system: an atomic rename
    fsync_dir(target.parent)
    return GgufFile(gguf_type, target, target.stat().st_size, sha256_file(target), round(seconds, 2))


def _record(export_dir: Path, manifest: dict[str, Any], result: GgufResult, prune: bool) -> None:
    from editor.pipeline.card import write_card

    kept = recorded_files(export_dir, manifest)
    entries = dict((manifest.get("gguf") or {}).get("files") or {})
    entries = {t: e for t, e in entries.items() if t in kept}
    asked = {f.type for f in result.files}
    if prune:
        for gguf_type, path in kept.items():
            if gguf_type not in asked and path.parent.resolve() == export_dir.resolve():
                path.unlink()
                entries.pop(gguf_type)
    for item in result.files:
        # Written relative to the export's parent folder (write_manifest), like every path in the manifest.
        entries[item.type] = {
            "file": str(item.path.absolute()),
            "bytes": item.bytes,
            "sha256": item.sha256,
            "seconds": item.seconds,
        }
    manifest["gguf"] = {
        "converter": f"llama.cpp's convert_hf_to_gguf.py, llama-cpp-python {llama_cpp_version()}",
        "gguf_arch": result.gguf_arch,
        "files": dict(sorted(entries.items())),
        "notes": result.notes,
    }
    # A llama.cpp verification was of the files as they were; rewritten files need a new one.
    if isinstance(manifest.get("verification"), dict):
        manifest["verification"].pop("llama_cpp", None)
    write_manifest(export_dir, manifest)
    write_card(export_dir, read_manifest(export_dir))
