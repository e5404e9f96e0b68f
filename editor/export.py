"""Stream a checkpoint through a plan into a new, standalone checkpoint directory.

Shard by shard: a shard that no edit touches is copied byte for byte (a kernel
copy, never decoded); a touched shard is loaded, its edited tensors are
recomputed in fp32 and cast back to their stored dtype, and it is written
again under the same name. Tensors the plan adds (zero biases, an untied
lm_head) go into one extra shard named in the index. Peak memory is one
shard. Everything is built in a temporary sibling directory and renamed into
place only when complete, so an interrupted export leaves nothing behind and
the source is never modified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from editor import __version__
from editor.bake import BakeProgram, compile_plan
from editor.atomic import refuse_existing, staged_directory
from editor.checkpoint import INDEX_FILE, SINGLE_FILE, Checkpoint
from editor.plan import Plan

MANIFEST = "editor_manifest.json"
EXTRA_SHARD = "model-editor-added.safetensors"
# Files the export writes itself instead of copying from the source.
_REWRITTEN = {"config.json", INDEX_FILE, MANIFEST}


@dataclass
class TensorChange:
    name: str
    sha256_before: str | None
    sha256_after: str
    edits: list[str]


@dataclass
class ExportResult:
    out: Path
    changed: list[TensorChange] = field(default_factory=list)
    added: list[TensorChange] = field(default_factory=list)
    copied_files: list[str] = field(default_factory=list)
    rewritten_files: list[str] = field(default_factory=list)
    config_updates: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def tensor_sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def _labels(program: BakeProgram, name: str) -> list[str]:
    return list(dict.fromkeys(op.label for op in program.ops.get(name, [])))


def export_checkpoint(
    source: Path,
    plan: Plan,
    out: Path,
    *,
    force: bool = False,
    base_source: str | None = None,
    progress: bool = True,
    extra_manifest: dict[str, Any] | None = None,
) -> ExportResult:
    source, out = Path(source), Path(out)
    refuse_existing(out, force)
    if out.resolve() == source.resolve():
        raise EditorError(f"{out}: the output must differ from the source; editor never modifies its input")
    ckpt = Checkpoint.open(source)
    program = compile_plan(plan.edits, ckpt.info())

    with staged_directory(out, force) as tmp:
        result = _write(ckpt, program, tmp, progress)
        result.out = out
        _write_config(ckpt, program, tmp)
        _copy_side_files(ckpt, tmp)
        manifest = build_manifest(ckpt, plan, program, result, base_source or str(source))
        if extra_manifest:
            manifest.update(extra_manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _write(ckpt: Checkpoint, program: BakeProgram, tmp: Path, progress: bool) -> ExportResult:
    result = ExportResult(out=tmp, config_updates=dict(program.config_updates), notes=list(program.notes))
    touched = program.touched
    sources_needed = program.source_reads()
    files = ckpt.files
    # A single-file checkpoint that gains tensors becomes a two-shard one: transformers
    # reads model.safetensors alone when it exists and would never see an extra shard.
    renames = {SINGLE_FILE: "model-00001-of-00002.safetensors"} if (program.new_tensors and not ckpt.sharded) else {}
    extra_name = "model-00002-of-00002.safetensors" if renames else EXTRA_SHARD
    copies: dict[str, torch.Tensor] = {}

    for file in tqdm(files, desc="export", unit="shard", disable=not progress):
        names = ckpt.tensors_in(file)
        target = tmp / renames.get(file, file)
        if not touched.intersection(names):
            shutil.copyfile(ckpt.path / file, target)  # byte-identical; kernel copy where the OS has one
            result.copied_files.append(target.name)
            for name in sources_needed.intersection(names):
                copies[name] = ckpt.read(name)
            continue
        tensors = ckpt.read_file(file)
        for name in sources_needed.intersection(names):
            copies[name] = tensors[name].clone()
        for name in sorted(touched.intersection(names)):
            before = tensor_sha256(tensors[name])
            tensors[name] = program.apply(name, tensors[name])
            result.changed.append(TensorChange(name, before, tensor_sha256(tensors[name]), _labels(program, name)))
        save_file(tensors, target, metadata=ckpt.file_metadata.get(file) or {"format": "pt"})
        result.rewritten_files.append(target.name)
        del tensors

    weight_map = {n: renames.get(f, f) for n, f in ckpt.weight_map.items()}
    total_size = sum(_nbytes(ckpt, n) for n in ckpt.metas)
    if program.new_tensors:
        added = {}
        for name in sorted(program.new_tensors):
            added[name] = program.materialize_new(name, copies.__getitem__).contiguous()
            result.added.append(TensorChange(name, None, tensor_sha256(added[name]), _labels(program, name) or ["added"]))
            weight_map[name] = extra_name
            total_size += added[name].numel() * added[name].element_size()
        save_file(added, tmp / extra_name, metadata={"format": "pt"})
        result.rewritten_files.append(extra_name)
    if ckpt.sharded or program.new_tensors:
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return result


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _nbytes(ckpt: Checkpoint, name: str) -> int:
    meta = ckpt.metas[name]
    count = 1
    for dim in meta.shape:
        count *= dim
    return count * _ITEMSIZE.get(meta.dtype, 1)


def _write_config(ckpt: Checkpoint, program: BakeProgram, tmp: Path) -> None:
    if not program.config_updates:
        shutil.copyfile(ckpt.path / "config.json", tmp / "config.json")
        return
    (tmp / "config.json").write_text(json.dumps(program.new_config(), indent=2, sort_keys=True) + "\n")


def _copy_side_files(ckpt: Checkpoint, tmp: Path) -> None:
    """Tokenizer, chat template, generation config and the like, byte-identical."""
    weights = set(ckpt.files) | {SINGLE_FILE}
    for entry in sorted(ckpt.path.iterdir()):
        if entry.name in weights or entry.name in _REWRITTEN or entry.name.startswith("."):
            continue
        if entry.is_file() and not entry.name.endswith((".safetensors", ".bin", ".pt", ".gguf")):
            shutil.copyfile(entry, tmp / entry.name)


def build_manifest(
    ckpt: Checkpoint, plan: Plan, program: BakeProgram, result: ExportResult, base_source: str
) -> dict[str, Any]:
    return {
        "editor_version": __version__,
        "base_model": {
            "source": base_source,
            "path": str(ckpt.path),
            "model_type": ckpt.config.get("model_type"),
            "revision": _revision(ckpt.path),
        },
        "command": sys.argv,
        "plan": [e.model_dump() for e in plan.edits],
        "edits_described": [e.describe() for e in plan.edits],
        "changed_tensors": [asdict(c) for c in result.changed],
        "added_tensors": [asdict(c) for c in result.added],
        "config_updates": result.config_updates,
        "notes": result.notes,
        "verification": None,
    }


def _revision(path: Path) -> str | None:
    # huggingface_hub snapshots live in .../snapshots/<commit sha>/
    return path.name if path.parent.name == "snapshots" else None

