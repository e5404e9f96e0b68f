"""Stream a checkpoint through a plan into a new, standalone checkpoint directory.

A shard that no edit touches (and that fits --max-shard-size) is copied byte
for byte (a kernel copy, never decoded). A touched shard is written again,
split where it exceeds the limit: its header first (offsets follow from shapes
and dtypes), then its untouched tensors as kernel copies of byte ranges and
its edited tensors recomputed in fp32 block of rows by block of rows, cast back
to their stored dtype, hashed and written at their place as each block is
computed (editor.pipeline.shard_writer runs copies and maths on two threads).
Tensors the plan adds (zero biases, an untied lm_head) go into extra shards
named in the index. Peak memory is a few row blocks, or one tensor in float32
where a projection must see a whole writer weight; never a shard. Everything is
built in a temporary sibling directory and renamed into place only when
complete, so an interrupted export leaves nothing behind and the source is
never modified.

Before anything is written every tensor of the source is scanned for NaN/Inf
(in 4 MiB chunks, at disk speed: 0.05-0.08 s for the built-in model's 269 MB
from the page cache). A base that holds any is refused, since the export would copy them and
`wedit verify` would refuse the result; ``allow_non_finite`` (``--allow-non-finite``)
copies them knowingly and records that in the manifest (``non_finite_base``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editor import __version__
from editor.core.bake import BakeProgram, compile_plan, serial_blas
from editor.core.plan import Plan
from editor.errors import EditorError
from editor.io.atomic import refuse_existing, staged_directory, write_text
from editor.io.checkpoint import INDEX_FILE, SINGLE_FILE, Checkpoint, NonFinite
from editor.io.manifest import MANIFEST, fingerprint, read_manifest, remember_base, write_manifest
from editor.io.progress import byte_progress
from editor.io.sources import SourceFacts, source_facts
from editor.io.tensor_file import nbytes, plan_file
from editor.pipeline.card import render_card
from editor.pipeline.shard_writer import Compute, Copy, fill_files

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9
FIGURES = "figures"
# Files the export writes itself instead of copying from the source.
_REWRITTEN = {"config.json", INDEX_FILE, MANIFEST, "README.md"}


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
    non_finite: NonFinite | None = None  # the base's NaN/Inf, copied because allow_non_finite was given


def tensor_sha256(raw: np.ndarray) -> str:
    """sha256 of a tensor's stored bytes (the same bytes safetensors holds)."""
    return hashlib.sha256(np.ascontiguousarray(raw).reshape(-1).view(np.uint8).data).hexdigest()


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
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    attachments: Sequence[Path] = (),
    command: list[str] | None = None,
    allow_non_finite: bool = False,
) -> ExportResult:
    """Bake ``plan`` into a copy of ``source`` at ``out``. ``command`` is the command line to record (paths in it
    are written relative to the output's parent folder), ``base_source`` the source spec the user named.
    A source holding NaN/Inf is refused before anything is written, unless ``allow_non_finite``."""
    source, out = Path(source), Path(out)
    refuse_existing(out, force)
    if out.resolve() == source.resolve():
        raise EditorError(f"{out}: the output must differ from the source; editor never modifies its input")
    ckpt = Checkpoint.open(source)
    program = compile_plan(plan.edits, ckpt.info())
    program.read_source = ckpt.read_raw  # ops that read another tensor (mean_heads' bias term) read the source
    attachments = [Path(a) for a in attachments]
    missing = [str(a) for a in attachments if not a.is_file()]
    if missing:
        raise EditorError(f"--attach {missing[0]}: file not found")
    non_finite = check_finite(ckpt, allow_non_finite, progress)

    with staged_directory(out, force) as tmp:
        _write_config(ckpt, program, tmp)
        _copy_side_files(ckpt, tmp)
        tokenizer = None
        if program.added_tokens:  # add_token edits: the tokenizer gains the tokens (rewritten, not copied)
            from editor.edits.add_token import TokenizerWriter

            tokenizer = TokenizerWriter(ckpt.path, tmp, program.added_tokens)
        try:
            with serial_blas():
                result = _write(ckpt, program, tmp, progress, max_shard_size)
            result.non_finite = non_finite
            if tokenizer:
                tokenizer.wait()
        finally:
            if tokenizer:
                tokenizer.stop()
        result.out = out
        manifest = build_manifest(
            ckpt, plan, program, result, source_facts(base_source or str(source), source), command
        )
        if extra_manifest:
            manifest.update(extra_manifest)
        if non_finite is not None:  # absent otherwise: a clean export's manifest is as it always was
            manifest = _with_non_finite(manifest, non_finite)
        if attachments:
            # Figures from the run (attribution heatmaps, k curves) travel with the model and its card links them.
            (tmp / FIGURES).mkdir()
            for item in attachments:
                shutil.copyfile(item, tmp / FIGURES / item.name)
            manifest["figures"] = [f"{FIGURES}/{item.name}" for item in attachments]
        write_manifest(tmp, manifest)  # tmp is a sibling of out: paths come out relative to the same folder
        remember_base(tmp, source)
        write_text(tmp / "README.md", render_card(read_manifest(tmp), out.name))
    return result


def check_finite(ckpt: Checkpoint, allow: bool, progress: bool = True) -> NonFinite | None:
    """Scan every tensor of ``ckpt`` for NaN/Inf; refuse what it finds unless ``allow``, else return it."""
    with byte_progress(ckpt.data_bytes, show=progress, desc="NaN/Inf scan") as bar:
        found = ckpt.scan_non_finite(bar.update)
    if found is not None and not allow:
        raise EditorError(
            f"{found.describe()}; an export would copy them and `wedit verify` would refuse it: fix the base, or pass "
            "--allow-non-finite to copy them knowingly; nothing was written"
        )
    return found


def _with_non_finite(manifest: dict[str, Any], found: NonFinite) -> dict[str, Any]:
    """The manifest with ``non_finite_base`` after ``base_model``: the base's NaN/Inf, copied as the user allowed."""
    record = {"allowed": True, **found.record()}
    items = list(manifest.items())
    at = next(i for i, (key, _) in enumerate(items) if key == "base_model") + 1
    return dict([*items[:at], ("non_finite_base", record), *items[at:]])


@dataclass
class _Part:
    """One output file: a byte copy of a source shard, or a group of tensors to write."""

    names: list[str]
    source: str | None = None  # source shard the tensors come from; None for added tensors
    copy: bool = False


def _group(names: list[str], sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Consecutive groups no larger than ``limit`` bytes (a tensor larger than that gets a file of its own)."""
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in names:
        if current and used + sizes[name] > limit:
            groups.append(current)
            current, used = [], 0
        current.append(name)
        used += sizes[name]
    if current:
        groups.append(current)
    return groups


def plan_layout(ckpt: Checkpoint, program: BakeProgram, max_shard_size: int) -> tuple[list[_Part], list[str]]:
    """Decide the output files and their names before reading any tensor data."""
    touched = program.touched
    sizes = {n: nbytes(program.shape_of(n), m.dtype) for n, m in ckpt.metas.items()}
    sizes.update({n: nbytes(program.shape_of(n), t.dtype) for n, t in program.new_tensors.items()})
    parts: list[_Part] = []
    for file in ckpt.files:
        names = ckpt.tensors_in(file)
        if not touched.intersection(names) and (ckpt.path / file).stat().st_size <= max_shard_size:
            parts.append(_Part(names, file, copy=True))
        else:
            parts += [_Part(group, file) for group in _group(names, sizes, max_shard_size)]
    if program.new_tensors:
        parts += [_Part(group) for group in _group(sorted(program.new_tensors), sizes, max_shard_size)]

    same_layout = len(parts) == len(ckpt.files) and all(p.source == f for p, f in zip(parts, ckpt.files))
    if same_layout:
        names = list(ckpt.files)
    else:
        names = [f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors" for i in range(len(parts))]
    return parts, names


def _write(ckpt: Checkpoint, program: BakeProgram, tmp: Path, show_progress: bool, max_shard_size: int) -> ExportResult:
    result = ExportResult(out=tmp, config_updates=dict(program.config_updates), notes=list(program.notes))
    parts, file_names = plan_layout(ckpt, program, max_shard_size)
    weight_map: dict[str, str] = {}
    copies: list[Copy] = []
    computes: list[Compute] = []
    for part, file_name in zip(parts, file_names):
        target = tmp / file_name
        weight_map.update(dict.fromkeys(part.names, file_name))
        if part.copy:
            assert part.source is not None
            target.touch()
            copies.append(Copy(ckpt.path / part.source, 0, (ckpt.path / part.source).stat().st_size, target, 0))
            result.copied_files.append(file_name)
            continue
        part_copies, part_computes = _lay_out_file(ckpt, program, part, target)
        copies += part_copies
        computes += part_computes
        result.rewritten_files.append(file_name)
    hashes = fill_files(program, ckpt, copies, computes, show_progress=show_progress)
    for job in computes:  # recorded in file order, whichever worker finished first
        name, done = job.slot.name, hashes[job.slot.name]
        if name in program.new_tensors:
            labels = _labels(program, name) or [program.new_tensors[name].reason]
            result.added.append(TensorChange(name, None, done.after, labels))
        else:
            result.changed.append(TensorChange(name, done.before, done.after, _labels(program, name)))

    if len(file_names) > 1 or ckpt.sharded:
        total = sum(nbytes(program.shape_of(n), m.dtype) for n, m in ckpt.metas.items())
        total += sum(nbytes(program.shape_of(n), t.dtype) for n, t in program.new_tensors.items())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        write_text(tmp / INDEX_FILE, json.dumps(index, indent=2) + "\n")
    return result


def _lay_out_file(
    ckpt: Checkpoint, program: BakeProgram, part: _Part, target: Path
) -> tuple[list[Copy], list[Compute]]:
    """Write ``target``'s header and size it; return the jobs that fill it (runs of untouched tensors are
    copied as bytes, never decoded; edited and added tensors are computed)."""

    def dtype(name: str) -> str:
        return program.new_tensors[name].dtype if name in program.new_tensors else ckpt.metas[name].dtype

    metadata = (ckpt.file_metadata.get(part.source) if part.source else None) or {"format": "pt"}
    header, slots = plan_file(((n, dtype(n), program.shape_of(n)) for n in part.names), metadata)
    with target.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + sum(slot.nbytes for slot in slots))
    copies: list[Copy] = []
    computes: list[Compute] = []
    for slot in slots:
        name = slot.name
        if name in program.new_tensors or name in program.touched:
            touched = name not in program.new_tensors
            computes.append(Compute(target, slot, touched, program.working_bytes(name)))
            continue
        meta = ckpt.metas[name]
        source = ckpt.file_of(name)
        last = copies[-1] if copies else None
        if (
            last
            and last.src == source
            and last.start + last.length == meta.start
            and last.offset + last.length == slot.offset
        ):
            copies[-1] = Copy(source, last.start, last.length + slot.nbytes, target, last.offset)  # one run
        else:
            copies.append(Copy(source, meta.start, slot.nbytes, target, slot.offset))
    return copies, computes


def _write_config(ckpt: Checkpoint, program: BakeProgram, tmp: Path) -> None:
    if not program.config_updates:
        shutil.copyfile(ckpt.path / "config.json", tmp / "config.json")
        return
    write_text(tmp / "config.json", json.dumps(program.new_config(), indent=2, sort_keys=True) + "\n")


def _copy_side_files(ckpt: Checkpoint, tmp: Path) -> None:
    """Tokenizer, chat template, generation config and the like, byte-identical."""
    weights = set(ckpt.files) | {SINGLE_FILE}
    for entry in sorted(ckpt.path.iterdir()):
        if entry.name in weights or entry.name in _REWRITTEN or entry.name.startswith("."):
            continue
        if entry.is_file() and not entry.name.endswith((".safetensors", ".bin", ".pt", ".gguf")):
            shutil.copyfile(entry, tmp / entry.name)


def build_manifest(
    ckpt: Checkpoint,
    plan: Plan,
    program: BakeProgram,
    result: ExportResult,
    facts: SourceFacts,
    command: list[str] | None = None,
) -> dict[str, Any]:
    # Published with the model: the base is named by what holds on any machine (built-in name, Hub id, content
    # fingerprint); a local base keeps only its location relative to the export (write_manifest makes it so).
    local = {"local": ckpt.path, "gguf": Path(facts.spec).expanduser()}.get(facts.kind)
    return {
        "editor_version": __version__,
        "base_model": {
            "source": facts.kind if local else facts.spec,
            "local_path": str(local.absolute()) if local else None,
            "hub_id": facts.hub_id,
            "revision": facts.revision,
            "license": facts.license,
            "model_type": ckpt.config.get("model_type"),
            "fingerprint": fingerprint(ckpt.path),
        },
        "command": command,
        "plan": [e.model_dump() for e in plan.edits],
        "edits_described": [e.describe() for e in plan.edits],
        "changed_tensors": [asdict(c) for c in result.changed],
        "added_tensors": [asdict(c) for c in result.added],
        "config_updates": result.config_updates,
        "notes": result.notes,
        "verification": None,
    }
