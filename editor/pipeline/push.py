"""Publish an export to the Hugging Face Hub, only when it is complete and verified."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from editor.errors import EditorError
from editor.io.checkpoint import Checkpoint
from editor.io.manifest import read_manifest


@dataclass
class PushPlan:
    repo: str
    files: list[str]
    total_bytes: int
    private: bool
    revision: str | None
    create_pr: bool


def check_pushable(export_dir: Path, *, allow_gate_failure: bool = False) -> None:
    """Refuse a directory that is not an editor export, whose verification is missing or failed, or that fails
    a damage gate its evaluation recorded (unless ``allow_gate_failure``)."""
    manifest = read_manifest(export_dir)
    checks = manifest.get("verification") or {}
    if not checks:
        raise EditorError(f"{export_dir}: not verified; run `wedit verify {export_dir}` (and --vllm) before pushing")
    failed = [name for name, check in checks.items() if not check.get("passed")]
    if failed:
        raise EditorError(
            f"{export_dir}: verification failed ({', '.join(failed)}); fix the export instead of publishing it"
        )
    gates = ((manifest.get("evaluation") or {}).get("summary") or {}).get("gates") or []
    failed = [f"{g['label']} dropped by {g['drop']:.4g} > {g['limit']:g}" for g in gates if not g.get("passed")]
    if failed and not allow_gate_failure:
        raise EditorError(
            f"{export_dir}: fails its damage gate ({'; '.join(failed)}); to publish it anyway: --allow-gate-failure"
        )
    if not (Path(export_dir) / "README.md").is_file():
        raise EditorError(f"{export_dir}: no model card (README.md); re-run `wedit verify {export_dir}` to write it")
    Checkpoint.open(export_dir)  # changed or damaged since it was verified: refused before any upload


def plan_push(
    export_dir: Path,
    repo: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    allow_gate_failure: bool = False,
) -> PushPlan:
    export_dir = Path(export_dir)
    check_pushable(export_dir, allow_gate_failure=allow_gate_failure)
    files = sorted(
        p.relative_to(export_dir).as_posix()
        for p in export_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    total = sum((export_dir / f).stat().st_size for f in files)
    return PushPlan(repo, files, total, private, revision, create_pr)


def push(plan: PushPlan, export_dir: Path) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(plan.repo, private=plan.private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=plan.repo,
            folder_path=str(export_dir),
            revision=plan.revision,
            create_pr=plan.create_pr,
            commit_message="Upload model edited with editor (wedit)",
            ignore_patterns=[".*"],
        )
    except (HfHubHTTPError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise EditorError(f"push to {plan.repo} failed ({reason}); check `hf auth login` and the network") from None
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
