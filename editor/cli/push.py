"""`wedit push`: upload a verified export to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a directory written by `wedit export` and checked by `wedit verify`")
    p.add_argument("--repo", required=True, help="Hub repository, org/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="branch to push to")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded and stop")
    p.add_argument(
        "--allow-gate-failure",
        action="store_true",
        help="publish an export whose evaluation failed a damage gate (eval.max_drop); refused without it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.pipeline.push import plan_push, push

    plan = plan_push(
        Path(args.dir),
        args.repo,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        allow_gate_failure=args.allow_gate_failure,
    )
    where = (
        f"{plan.repo}"
        + (f"@{plan.revision}" if plan.revision else "")
        + (" as a pull request" if plan.create_pr else "")
    )
    print(
        f"{'would upload' if args.dry_run else 'uploading'} {len(plan.files)} files ({plan.total_bytes / 1e6:.1f} MB) to {where}:"
    )
    for name in plan.files:
        print(f"  {name}")
    if args.dry_run:
        return 0
    print(push(plan, Path(args.dir)))
    return 0
