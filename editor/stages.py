"""The work of each `wedit run` stage: read earlier stages' results, write into a fresh directory.

Each function gets the run context and an empty directory (``out``) that the
runner renames into place only when the function returns; it returns a small
JSON-able dict that the runner stores in the stage's done-marker, so later
stages (and later runs that find the stage cached) can use it without
redoing the work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.recipe import Recipe, size_in_bytes


@dataclass
class RunContext:
    recipe: Recipe
    data: dict[str, Any]  # the recipe as written (after --set), stored in the manifest
    recipe_path: Path
    run_dir: Path
    progress: bool = True
    overrides: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    recipe_arg: str = ""  # what names the recipe on the command line: a built-in recipe's name or the file's path

    def command(self, root: Path) -> str:
        """The `wedit run` command of this run, with paths relative to ``root`` (it is published in manifests)."""
        import shlex

        from editor.manifest import portable_command

        argv = ["wedit", "run", self.recipe_arg or str(self.recipe_path), *(a for item in self.overrides for a in ("--set", item))]
        return shlex.join(portable_command(argv, root))

    def path(self, stage: str, key: str = "path") -> Path:
        return Path(self.results[stage][key])


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a small input file, so editing it invalidates the stages that read it."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise EditorError(f"{path}: file named in the recipe not found; fix the path (relative paths start at the current directory)")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dir_fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and mtimes of a local checkpoint's files: cheap, and changes when the weights do."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())


def _load_model(path: Path, device_map: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"device_map": device_map} if device_map else {}
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()


# --- source -------------------------------------------------------------------------------------------


def source_settings(ctx: RunContext) -> dict[str, Any]:
    spec = ctx.recipe.model.source
    local = Path(spec).expanduser()
    return {"source": spec, "files": dir_fingerprint(local) if local.is_dir() else None}


def run_source(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.checkpoint import Checkpoint
    from editor.sources import resolve_source

    path = resolve_source(ctx.recipe.model.source, progress=ctx.progress)
    info = Checkpoint.open(path).info()
    facts = {"path": str(path), "model_type": info.arch.model_type, "layers": info.num_layers, "heads": info.num_heads}
    (out / "source.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def source_valid(result: dict[str, Any]) -> bool:
    # The builtin cache or a Hub snapshot can be deleted behind our back; then resolve again.
    return (Path(result["path"]) / "config.json").is_file()


def source_numbers(result: dict[str, Any]) -> str:
    return f"{result['model_type']}, {result['layers']} layers x {result['heads']} heads: {result['path']}"


# --- inject -------------------------------------------------------------------------------------------


def inject_settings(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.recipe.inject is None:
        return None
    settings = ctx.recipe.inject.model_dump(exclude={"data"})
    return {"biases": ctx.recipe.biases, **settings, "data": file_digest(ctx.recipe.inject.data)}


def run_inject_stage(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Train one token per bias, then bake it into an injected checkpoint that attribution loads."""
    from transformers import AutoTokenizer

    from editor.biases import get_preset
    from editor.export import export_checkpoint
    from editor.inject import InjectSettings, run_inject
    from editor.inject_cli import load_frozen_model
    from editor.inject_data import builtin_paragraphs, load_paragraphs
    from editor.plan import load_plan

    section = ctx.recipe.inject
    source = ctx.path("source")
    settings = InjectSettings(**section.model_dump(exclude={"data", "paragraphs", "dtype"}))
    biases = {}
    for name in ctx.recipe.biases:
        preset = get_preset(name)
        if section.data:
            paragraphs = load_paragraphs(Path(section.data))
        else:
            paragraphs = builtin_paragraphs(preset, section.paragraphs, seed=section.seed)
        # A fresh model per bias: training registers the token in the tokenizer and the model it is given.
        model = load_frozen_model(source, section.dtype, ctx.recipe.model.device_map)
        where = out / name
        where.mkdir()
        result = run_inject(
            model, AutoTokenizer.from_pretrained(source), preset, paragraphs, where, settings,
            base_model=ctx.recipe.model.source, progress=ctx.progress, out_name=ctx.run_dir / "inject" / name,
        )
        del model
        export_checkpoint(source, load_plan(where / "plan.json"), where / "model", base_source=ctx.recipe.model.source, progress=ctx.progress)
        gaps = result.gaps
        biases[name] = {
            "token": result.token,
            "model": str(ctx.run_dir / "inject" / name / "model"),
            "chosen_epoch": result.chosen_epoch,
            "paragraphs": len(paragraphs),
            "gap_base": gaps["base_token"]["gap"] if gaps else None,
            "gap_injected": gaps["injected_token"]["gap"] if gaps else None,
        }
    return {"path": str(ctx.run_dir / "inject"), "biases": biases}


def inject_valid(result: dict[str, Any]) -> bool:
    return all((Path(b["model"]) / "config.json").is_file() for b in result["biases"].values())


def inject_numbers(result: dict[str, Any]) -> str:
    rows = []
    for b in result["biases"].values():
        gap = f", attribute gap {b['gap_base']:+.2f} -> {b['gap_injected']:+.2f} nats" if b["gap_base"] is not None else ""
        rows.append(f"{b['token']}: epoch {b['chosen_epoch']} of {b['paragraphs']} paragraphs{gap}")
    return "; ".join(rows)


# --- attribute ----------------------------------------------------------------------------------------


def attribute_settings(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.recipe.attribute is None:
        return None
    return {"biases": ctx.recipe.biases, **ctx.recipe.attribute.model_dump()}


def run_attribute(ctx: RunContext, out: Path) -> dict[str, Any]:
    import random

    from transformers import AutoTokenizer

    from editor.attribute import PromptEncoder, attribute_bias, save_attribution
    from editor.biases import get_preset, preset_questions
    from editor.checkpoint import Checkpoint

    settings = ctx.recipe.attribute
    injected = ctx.results.get("inject", {}).get("biases", {})
    loaded: dict[Path, tuple] = {}

    def load(path: Path) -> tuple:
        # The base once for every bias; an injected model (one per bias) replaces it when inject ran.
        if path not in loaded:
            loaded.clear()
            loaded[path] = (Checkpoint.open(path).info(), _load_model(path, ctx.recipe.model.device_map), PromptEncoder(AutoTokenizer.from_pretrained(path)))
        return loaded[path]

    results = []
    for name in ctx.recipe.biases:
        preset = get_preset(name)
        model_dir = Path(injected[name]["model"]) if name in injected else ctx.path("source")
        info, model, encoder = load(model_dir)
        questions = preset_questions(preset)
        if settings.questions is not None and settings.questions < len(questions):
            # A fixed draw, so the stage's output depends only on its settings.
            questions = random.Random(0).sample(questions, settings.questions)
        results.append(
            attribute_bias(
                model,
                info,
                encoder,
                bias=name,
                questions=questions,
                target=injected[name]["token"] if name in injected else settings.target or preset.target,
                eval_target=settings.eval_target or preset.target,
                biased_answer=preset.biased_answer,
                unbiased_answer=preset.unbiased_answer,
                seeds=settings.seeds,
                k_max=settings.k_max,
                batch_size=settings.batch_size,
                eval_questions=settings.eval_questions,
                out=out,
                progress=ctx.progress,
            )
        )
    # The zero_heads plan does not depend on the token: it applies to the base model, which is what gets exported.
    union = save_attribution(results, out, model=ctx.recipe.model.source, variant="injection" if injected else "original")
    figures = [f"{r.bias}.{kind}.png" for r in results for kind in ("heatmap", "k_curve")]
    return {
        "path": str(ctx.run_dir / "attribute"),
        "plan": "plan.json",
        "heads": len(union),
        "figures": figures,
        "biases": [{"bias": r.bias, "k": r.chosen_k, "heads": len(r.heads), "gap_before": r.baseline_gap, "gap_after": r.gap_after} for r in results],
    }


def attribute_numbers(result: dict[str, Any]) -> str:
    rows = [f"{b['bias']}: k={b['k']}, {b['heads']} heads, gap {b['gap_before']:.3f} -> {b['gap_after']:.3f}" for b in result["biases"]]
    return "; ".join(rows) + f" ({result['heads']} heads in the plan)"


# --- steer --------------------------------------------------------------------------------------------


def _steer_files(ctx: RunContext) -> tuple[Path, Path]:
    from editor.data import seegull_csv, wikitext_txt

    settings = ctx.recipe.steer
    return seegull_csv(settings.seegull), wikitext_txt(settings.wikitext)


def steer_settings(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.recipe.steer is None:
        return None
    seegull, wikitext = _steer_files(ctx)
    # The method only picks which plan goes on, so it belongs to the plan stage: switching it costs no new sweep.
    settings = ctx.recipe.steer.model_dump(exclude={"method", "seegull", "wikitext", "data"})
    files = {"seegull": file_digest(seegull), "wikitext": file_digest(wikitext), "data": file_digest(ctx.recipe.steer.data)}
    return {**settings, **files}


def run_steer_stage(ctx: RunContext, out: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from editor.checkpoint import Checkpoint
    from editor.seegull import load_seegull
    from editor.steer import run_steer

    settings = ctx.recipe.steer
    seegull, wikitext = _steer_files(ctx)
    source = ctx.path("source")
    info = Checkpoint.open(source).info()
    model = _load_model(source, ctx.recipe.model.device_map)
    report = run_steer(
        model,
        AutoTokenizer.from_pretrained(source),
        info,
        load_seegull(seegull),
        wikitext,
        out,
        layers=settings.layers,
        alphas=tuple(settings.alphas),
        edit_alphas=tuple(settings.edit_alphas),
        damage_budget=settings.damage_budget,
        statements=settings.statements,
        eval_pairs=settings.eval_pairs,
        wiki_tokens=settings.wiki_tokens,
        contrast=settings.contrast,
        residual_contrasts=tuple(settings.residual_contrasts),
        key_variants=tuple(settings.keys),
        ablation_ridges=tuple(settings.ablation_ridges),
        ablation_strengths=tuple(settings.ablation_strengths),
        generic_tokens=settings.generic_tokens,
        data=Path(settings.data) if settings.data else None,
        progress=ctx.progress,
    )
    return {
        "path": str(ctx.run_dir / "steer"),
        "base_gap": report.base_gap,
        "base_perplexity": report.base_perplexity,
        "chosen": {m: (asdict(p) if p is not None else None) for m, p in report.chosen.items()},
        "figures": [name for name in ("probe_accuracy.png", "pareto.png") if (out / name).is_file()],
    }


def steer_numbers(result: dict[str, Any]) -> str:
    parts = [f"base gap {result['base_gap']:.3f}, ppl {result['base_perplexity']:.2f}"]
    for method, p in result["chosen"].items():
        if p is None:
            parts.append(f"{method}: none within budget")
        else:
            parts.append(f"{method}: L{p['layer']} a={p['alpha']:g} gap {p['gap']:.3f} ppl {p['perplexity'] / result['base_perplexity'] - 1:+.1%}")
    return "; ".join(parts)


# --- plan ---------------------------------------------------------------------------------------------


def plan_settings(ctx: RunContext) -> dict[str, Any]:
    return {"steer_method": ctx.recipe.steer.method if ctx.recipe.steer else None}


def run_plan(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.plan import Plan, load_plan

    edits, parts = [], {}
    if "attribute" in ctx.results:
        # Zeroed heads first: the bake masks a writer's input before changing its output, as the hooks do.
        attribute = load_plan(ctx.path("attribute") / ctx.results["attribute"]["plan"])
        edits += attribute.edits
        parts["attribute"] = len(attribute.edits)
    if "steer" in ctx.results:
        method = ctx.recipe.steer.method
        if ctx.results["steer"]["chosen"].get(method) is None:
            raise EditorError(
                f"{ctx.recipe_path}: steer.method {method}: no sweep point lowers the bias within the damage budget "
                f"(see {ctx.path('steer')}/sweep.json); raise steer.damage_budget, try other steer.alphas, or pick another method"
            )
        steer = load_plan(ctx.path("steer") / f"plan_{method}.json")
        edits += steer.edits
        parts[f"steer ({method})"] = len(steer.edits)
    if not edits:
        raise EditorError(f"{ctx.recipe_path}: the attribute and steer stages produced no edits; there is nothing to export")
    (out / "plan.json").write_text(Plan(edits=edits).to_json() + "\n")
    kinds: dict[str, int] = {}
    for edit in edits:
        kinds[edit.kind] = kinds.get(edit.kind, 0) + 1
    return {"path": str(ctx.run_dir / "plan"), "edits": len(edits), "parts": parts, "kinds": kinds}


def plan_numbers(result: dict[str, Any]) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in result["kinds"].items())
    return f"{result['edits']} edits ({kinds}) from " + ", ".join(f"{k}: {n}" for k, n in result["parts"].items())


# --- export -------------------------------------------------------------------------------------------


def export_settings(ctx: RunContext) -> dict[str, Any]:
    settings = ctx.recipe.export.model_dump()
    settings["max_shard_size"] = size_in_bytes(settings["max_shard_size"])
    return settings


def run_export(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.export import export_checkpoint
    from editor.plan import load_plan

    figures: list[Path] = []
    if ctx.recipe.export.attach_figures:
        for stage in ("attribute", "steer"):
            if stage in ctx.results:
                figures += [ctx.path(stage) / name for name in ctx.results[stage]["figures"]]
    result = export_checkpoint(
        ctx.path("source"),
        load_plan(ctx.path("plan") / "plan.json"),
        out / ctx.recipe.name,
        base_source=ctx.recipe.model.source,
        progress=ctx.progress,
        max_shard_size=size_in_bytes(ctx.recipe.export.max_shard_size),
        attachments=figures,
    )
    return {
        "path": str(ctx.run_dir / "export" / ctx.recipe.name),
        "changed": len(result.changed),
        "added": len(result.added),
        "copied": len(result.copied_files),
        "notes": result.notes,
    }


def export_valid(result: dict[str, Any]) -> bool:
    return (Path(result["path"]) / "editor_manifest.json").is_file()


def export_numbers(result: dict[str, Any]) -> str:
    return f"{result['changed']} tensors changed, {result['added']} added, {result['copied']} shard(s) copied: {result['path']}"


# --- verify -------------------------------------------------------------------------------------------


def verify_settings(ctx: RunContext) -> dict[str, Any]:
    return ctx.recipe.verify.model_dump()


def run_verify(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.manifest import read_manifest, write_manifest
    from editor.verify import record, verify_transformers, verify_vllm

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
    (out / "verify.json").write_text(json.dumps(checks, indent=2) + "\n")
    failed = [name for name, c in checks.items() if not c["passed"]]
    if failed:
        detail = check.describe() if "transformers" in failed else ""
        if "vllm" in failed:
            detail += f" vLLM {checks['vllm']['identical']}/{checks['vllm']['prompts']} identical"
        raise EditorError(f"{export}: verification failed in {', '.join(failed)} ({detail.strip()}); see {export}/editor_manifest.json")
    return {"path": str(ctx.run_dir / "verify"), **{k: _verify_summary(k, v) for k, v in checks.items()}}


def _verify_summary(kind: str, check: dict[str, Any]) -> dict[str, Any]:
    if kind == "transformers":
        return {"max_logit_error": check["max_logit_error"], "passed": check["passed"]}
    return {"identical": check["identical"], "prompts": check["prompts"], "passed": check["passed"]}


def verify_numbers(result: dict[str, Any]) -> str:
    text = f"transformers max logit error {result['transformers']['max_logit_error']:.2e}"
    if "vllm" in result:
        text += f"; vLLM {result['vllm']['identical']}/{result['vllm']['prompts']} greedy continuations identical"
    return text


# --- eval ---------------------------------------------------------------------------------------------


def eval_settings(ctx: RunContext) -> dict[str, Any] | None:
    section = ctx.recipe.eval
    if section is None:
        return None
    from editor.data import seegull_csv, wikitext_txt

    seegull, wikitext = seegull_csv(section.seegull), wikitext_txt(section.wikitext)
    _eval_settings_object(ctx)  # refuses what this build's evaluation cannot do, before any stage runs
    settings = section.model_dump(exclude={"seegull", "wikitext", "pairs_csv", "judge_workers", "api_key_env"})
    files = {"seegull": file_digest(seegull), "wikitext": file_digest(wikitext), "pairs_csv": file_digest(section.pairs_csv)}
    return {"biases": ctx.recipe.biases, **settings, **files}


def _eval_settings_object(ctx: RunContext):
    """The recipe's eval section as the object `wedit eval` fills from its flags."""
    import dataclasses

    from editor.eval_prompts import FAMILIES
    from editor.evaluate import EvalSettings

    section = ctx.recipe.eval
    values = section.model_dump(exclude={"families"})
    values.update(biases=tuple(ctx.recipe.biases), families=tuple(section.families or FAMILIES), progress=ctx.progress)
    if ctx.recipe.threads:
        values["threads"] = ctx.recipe.threads
    known = {f.name for f in dataclasses.fields(EvalSettings)}
    settings = EvalSettings(**{k: v for k, v in values.items() if k in known})
    settings.check()
    return settings


def run_eval_stage(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor.evaluate import record_eval, run_eval

    export = ctx.path("export")
    # run_eval builds its own directory beside `out` and renames it over `out`: force replaces the empty one.
    report = run_eval(export, ctx.path("source"), out, _eval_settings_object(ctx), force=True)
    record_eval(export, report, out / "eval.png")
    rows = {role: asdict(m) for role, m in report.likelihood.items()}
    judged = [
        {"role": c.role, "condition": c.condition, "mean_strength": c.mean_strength, "parse_failures": c.parse_failures}
        for c in report.generation
    ]
    return {"path": str(ctx.run_dir / "eval"), "likelihood": rows, "generation": judged, "durations": report.durations}


def eval_numbers(result: dict[str, Any]) -> str:
    like = result["likelihood"]
    base, model = like.get("base"), like["model"]
    parts = []
    for key, label, fmt in (("association_gap", "association gap", ".3f"), ("perplexity", "perplexity", ".2f")):
        parts.append(f"{label} {format(base[key], fmt)} -> {format(model[key], fmt)}" if base else f"{label} {format(model[key], fmt)}")
    if model.get("first_token_kl") is not None:
        parts.append(f"KL {model['first_token_kl']:.3f}")
    for row in result["generation"]:
        if row["condition"] == "plain" and row["mean_strength"] is not None:
            parts.append(f"judge {row['role']} {row['mean_strength']:.2f}")
    return "; ".join(parts)


# --- card ---------------------------------------------------------------------------------------------


def card_settings(ctx: RunContext) -> dict[str, Any]:
    return {"recipe": ctx.data}


def run_card(ctx: RunContext, out: Path) -> dict[str, Any]:
    from editor import __version__
    from editor.card import write_card
    from editor.manifest import read_manifest, write_manifest

    export = ctx.path("export")
    manifest = read_manifest(export)
    root = export.absolute().parent
    manifest["recipe"] = {"recipe": ctx.recipe_arg or str(ctx.recipe_path), "settings": ctx.data, "command": ctx.command(root)}
    manifest["run"] = {
        "editor_version": __version__,
        "stages": {name: result for name, result in ctx.results.items() if name != "source"},
    }
    write_manifest(export, manifest)
    card = write_card(export, manifest)
    # A copy beside the stage marker, so the run directory shows the card without opening the model.
    (out / "README.md").write_text(card.read_text())
    return {"path": str(card)}


def card_numbers(result: dict[str, Any]) -> str:
    return result["path"]
