"""The edit manifest (editor_manifest.json): read, write, and keep local paths out of it.

The manifest is published with the model (``wedit push``), so it must not
record where things lived on the user's disk: every absolute path in it is
written relative to the export's parent folder, or reduced to its name when
it lies outside that folder's tree. The base model is identified by what
holds anywhere: its Hub id and revision or built-in name, and a content
fingerprint; a local base keeps only a relative hint, checked against the
fingerprint before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.io.atomic import write_text
from editor.io.json_file import read_json_object

MANIFEST = "editor_manifest.json"
OUTSIDE = "<elsewhere>"
# Where the base lay on this machine, for verify and eval here: a hidden file, never pushed (push skips
# dot files), so the published manifest holds no local path. The fingerprint still decides.
LOCAL_BASE = ".editor_base_path"


def remember_base(export_dir: Path, base: Path) -> None:
    write_text(Path(export_dir) / LOCAL_BASE, str(Path(base).absolute()) + "\n")


def read_manifest(export_dir: Path) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise EditorError(f"{export_dir}: no {MANIFEST}; this works on directories written by `wedit export`")
    manifest = read_json_object(path, "export the model again")
    if not isinstance(manifest.get("base_model"), dict):
        raise EditorError(f"{path}: not an editor manifest (no base_model); export the model again")
    _check_kinds(path, manifest)
    return manifest


# What each section of a manifest holds, so a hand-edited or damaged one is one clear line, not a crash later.
_SECTIONS: dict[str, type] = {
    "plan": list,
    "edits_described": list,
    "changed_tensors": list,
    "added_tensors": list,
    "config_updates": dict,
    "non_finite_base": dict,  # only in an export of a base holding NaN/Inf, made with --allow-non-finite
    "notes": list,
    "figures": list,
    "verification": dict,
    "evaluation": dict,
}
_BASE_TEXT = ("source", "local_path", "hub_id", "revision", "license", "model_type")


def _check_kinds(path: Path, manifest: dict[str, Any]) -> None:
    for key, kind in _SECTIONS.items():
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            raise EditorError(f"{path}: {key} is not a JSON {kind.__name__}; export the model again")
    base = manifest["base_model"]
    bad = next((k for k in _BASE_TEXT if base.get(k) is not None and not isinstance(base[k], str)), None)
    if bad is not None or not isinstance(base.get("fingerprint") or {}, dict):
        raise EditorError(f"{path}: base_model.{bad or 'fingerprint'} is malformed; export the model again")
    checks = manifest.get("verification") or {}
    if not all(isinstance(check, dict) for check in checks.values()):
        raise EditorError(f"{path}: verification holds a malformed entry; run `wedit verify` again")


def write_manifest(export_dir: Path, manifest: dict[str, Any]) -> None:
    """Write atomically, with every absolute path made portable (see ``portable``)."""
    export_dir = Path(export_dir)
    clean = portable(manifest, export_dir.absolute().parent)
    write_text(export_dir / MANIFEST, json.dumps(clean, indent=2) + "\n")


def portable_path(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` when they share more than the filesystem root, else ``<elsewhere>/NAME``."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    common = Path(os.path.commonpath([path, root]))
    if common == Path(common.anchor):
        return f"{OUTSIDE}/{path.name}"
    return Path(os.path.relpath(path, root)).as_posix()


def _looks_absolute(text: str) -> bool:
    return text.startswith(("/", "~/")) and "\n" not in text


def portable(value: Any, root: Path) -> Any:
    """A copy of a JSON value with every absolute path string made relative to ``root`` (see portable_path)."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and _looks_absolute(value):
        return portable_path(Path(value).expanduser(), root)
    return value


def portable_command(argv: list[str], root: Path, outputs: tuple[str, ...] = ()) -> list[str]:
    """A command line (program, subcommand, arguments) with every argument that names an existing file or folder,
    or one of ``outputs`` (paths the command is about to write), written relative to ``root``; so is the value of
    a ``--set section.field=VALUE`` override that is a path."""
    out = list(argv[:2])  # `wedit run`: a folder named like the subcommand must not turn it into a path
    previous = ""
    for arg in argv[2:]:
        if previous == "--set" and "=" in arg:
            field, _, value = arg.partition("=")
            out.append(f"{field}={_portable_value(value, root, outputs)}")
        else:
            name, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
            out.append(f"{name}{eq}{_portable_value(value, root, outputs)}")
        previous = arg
    return out


def _portable_value(value: str, root: Path, outputs: tuple[str, ...]) -> str:
    if value.startswith("[") and value.endswith("]"):  # a YAML list in an override: each item on its own
        items = [_portable_value(item.strip(), root, outputs) for item in value[1:-1].split(",")]
        return "[" + ", ".join(items) + "]"
    path = Path(value).expanduser()
    if value and not value.startswith("-") and (path.exists() or path.is_absolute() or value in outputs):
        return portable_path(path, root)
    return value


def fingerprint(checkpoint_dir: Path) -> dict[str, str]:
    """Content fingerprint of a checkpoint that costs a few kilobytes of reading: config.json and the shards' headers.

    The headers hold every tensor's name, dtype, shape and offsets; a changed weight of the same shape is not
    caught, but any other change of file, layout or architecture is.
    """
    from editor.io.checkpoint import Checkpoint

    checkpoint_dir = Path(checkpoint_dir)
    ckpt = Checkpoint.open(checkpoint_dir)
    config = hashlib.sha256((checkpoint_dir / "config.json").read_bytes()).hexdigest()
    headers = hashlib.sha256()
    for file in ckpt.files:
        with (checkpoint_dir / file).open("rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            headers.update(file.encode() + b"\0" + fh.read(length))
    return {"config_sha256": config, "headers_sha256": headers.hexdigest()}


def locate_base(export_dir: Path, manifest: dict[str, Any], override: str | None = None) -> Path:
    """The base checkpoint an export was made from, on this machine.

    ``override`` (``--base``) wins; then the recorded built-in name or Hub id; then where the base lay when
    the export was made on this machine (``.editor_base_path``); then the recorded relative location.
    Whatever is found must carry the recorded fingerprint.
    """
    from editor.io.sources import BUILTIN_PREFIX, resolve_source

    base = manifest["base_model"]
    recorded = base.get("fingerprint")
    candidates: list[tuple[str, Path | None]] = []
    if override:
        candidates.append((f"--base {override}", resolve_source(override)))
    else:
        spec = base.get("source") or ""
        if spec.startswith(BUILTIN_PREFIX) or (base.get("hub_id") and spec == base.get("hub_id")):
            candidates.append((spec, resolve_source(spec)))
        here = Path(export_dir) / LOCAL_BASE
        if here.is_file() and spec == "local":
            path = Path(here.read_text().strip())
            candidates.append((str(path), path if (path / "config.json").is_file() else None))
        hint = base.get("local_path")
        if hint and not hint.startswith(OUTSIDE):
            path = Path(export_dir).absolute().parent / hint
            if spec == "gguf":
                candidates.append((str(path), resolve_source(str(path)) if path.is_file() else None))
            else:
                candidates.append((str(path), path if (path / "config.json").is_file() else None))
    for label, found in candidates:
        if found is None:
            continue
        if recorded and fingerprint(found) != recorded:
            if override:
                raise EditorError(
                    f"{label}: not the base this export was made from (its config or tensor layout differ)"
                )
            continue
        return found
    raise EditorError(
        f"{export_dir}: cannot find its base model on this machine ({base.get('source') or 'a local checkpoint'}); "
        "pass --base DIR with the checkpoint it was exported from"
    )


def base_name(manifest: dict[str, Any], base_dir: Path) -> str | None:
    """The recorded built-in name or Hub id, when ``base_dir`` is where that model lies on this machine and
    carries the recorded fingerprint; else None.

    A card names its base this way rather than by a path into the user's cache, which means nothing to a reader
    of the Hub page. The location is checked as well as the fingerprint because the fingerprint reads only the
    config and the tensor layout, which an export or a fine-tune of the same model shares; any other base keeps
    its path, so a comparison against some other checkpoint is never passed off as one against the recorded base.
    """
    from editor.io.sources import cached_location

    base = manifest.get("base_model") or {}
    spec, recorded = base.get("source") or "", base.get("fingerprint")
    home = cached_location(spec)  # None for a local checkpoint or GGUF file: those keep their path
    if home is None or not recorded or not (Path(base_dir) / "config.json").is_file():
        return None
    where, home = Path(base_dir).resolve(), home.resolve()
    if where != home and home not in where.parents:
        return None
    try:
        same = fingerprint(Path(base_dir)) == recorded
    except (OSError, ValueError, EditorError):  # unreadable shards: not provably the recorded base
        return None
    return spec if same else None
