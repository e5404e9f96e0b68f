"""`wedit`: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from editor import __version__
from editor.errors import EditorError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' or a byte count."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def _cmd_archs(args: argparse.Namespace) -> int:
    from editor.architectures import ARCHITECTURES
    from editor.capabilities import COLUMNS, matrix, matrix_markdown

    if args.json:
        print(json.dumps({mt: {c: cap.__dict__ for c, cap in row.items()} for mt, row in matrix().items()}, indent=2))
        return 0
    if args.markdown:
        print(matrix_markdown())
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edit x architecture (exact = hook and bake agree; tests prove it)", show_lines=True)
    table.add_column("model_type (class)")
    for col in COLUMNS:
        table.add_column(col)
    for mt, row in matrix().items():
        cells = []
        for col in COLUMNS:
            cap = row[col]
            colour = {"exact": "green", "via": "yellow", "refused": "red"}[cap.status]
            cells.append(f"[{colour}]{cap.render()}[/{colour}]")
        table.add_row(f"{mt}\n({ARCHITECTURES[mt].causal_lm_class})", *cells)
    Console(width=max(160, Console().width)).print(table)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from editor.sources import fetch

    out = fetch(args.source, Path(args.out), force=args.force, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from editor.export import export_checkpoint
    from editor.plan import load_plan
    from editor.sources import resolve_source

    from editor.manifest import portable_command

    plan = load_plan(args.plan)
    source = resolve_source(args.model)
    out = Path(args.out)
    result = export_checkpoint(
        source,
        plan,
        out,
        force=args.force,
        base_source=args.model,
        max_shard_size=args.max_shard_size,
        attachments=[Path(a) for a in args.attach],
        command=portable_command(["wedit", *args.argv], out.absolute().parent, outputs=(args.out,)),
    )
    print(
        f"wrote {result.out}: {len(result.changed)} tensors changed, {len(result.added)} added, "
        f"{len(result.copied_files)} shard(s) copied unchanged"
    )
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from editor.card import write_card
    from editor.verify import record, verify_transformers, verify_vllm

    out = Path(args.dir)
    check = verify_transformers(out, base=args.base)
    manifest = record(out, "transformers", check)
    print(f"transformers: {check.describe()}")
    ok = check.passed
    if args.vllm:
        served = verify_vllm(out, max_new_tokens=args.max_new_tokens)
        manifest = record(out, "vllm", served)
        for row in served.continuations:
            mark = "same" if row["identical"] else "DIFF"
            print(f"  [{mark}] {row['prompt']!r} -> {row['transformers']!r}" + ("" if row["identical"] else f" | vLLM: {row['vllm']!r}"))
        print(
            f"vLLM: {served.identical}/{served.prompts} greedy continuations identical to transformers, "
            f"max first-token log-prob difference {served.max_first_token_logprob_diff:.2e}: "
            f"{'pass' if served.passed else 'FAIL'} (need {served.required_identical})"
        )
        ok = ok and served.passed
    write_card(out, manifest)
    return 0 if ok else 1


def _cmd_diff(args: argparse.Namespace) -> int:
    from editor.diff import diff_checkpoints
    from editor.sources import resolve_source

    report = diff_checkpoints(resolve_source(args.a), resolve_source(args.b), progress=not args.json)
    print(report.to_json() if args.json else report.render())
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from editor.push import plan_push, push

    plan = plan_push(Path(args.dir), args.repo, private=args.private, revision=args.revision, create_pr=args.create_pr)
    where = f"{plan.repo}" + (f"@{plan.revision}" if plan.revision else "") + (" as a pull request" if plan.create_pr else "")
    print(f"{'would upload' if args.dry_run else 'uploading'} {len(plan.files)} files ({plan.total_bytes / 1e6:.1f} MB) to {where}:")
    for name in plan.files:
        print(f"  {name}")
    if args.dry_run:
        return 0
    print(push(plan, Path(args.dir)))
    return 0


def _cmd_import_vectors(args: argparse.Namespace) -> int:
    from editor.atomic import refuse_existing, write_text
    from editor.checkpoint import Checkpoint
    from editor.import_vectors import check_scale, parse_layer_range, read_vectors, span
    from editor.plan import Plan
    from editor.sources import resolve_source

    out = Path(args.out)
    refuse_existing(out, args.force)
    layers = parse_layer_range(args.layers)
    everything = read_vectors(args.file)
    vectors = everything.select(layers)
    info = Checkpoint.open(resolve_source(args.model)).info()
    edits = vectors.to_edits(info, check_scale(args.scale))
    plan = json.loads(Plan(edits=edits).to_json())
    plan["imported_from"] = {"file": str(args.file), "site": vectors.site, "scale": args.scale, "model_hint": vectors.model_hint}
    write_text(out, json.dumps(plan, indent=2) + "\n")
    where = "after block" if vectors.site == "block" else "after the attention of block"
    print(f"wrote {out}: {len(edits)} residual_add edits ({where} {', '.join(str(e.layer) for e in edits)}), scale {args.scale:g}")
    print(f"imported layers {span(vectors.vectors)}" + (f" (of {span(everything.vectors)} in the file)" if layers else " (every layer in the file)"))
    if Path(args.file).suffix == ".gguf" and not layers:
        print(
            "note: a repeng or llama.cpp control vector file holds a direction for every layer it was trained on, while "
            "run-time steering usually applies a subset (repeng's ControlModel layer_ids, llama.cpp's "
            "--control-vector-layer-range). To bake the model you steered, pass the same blocks: --layers A-B "
            "(e.g. repeng layer_ids=range(13, 26) is --layers 13-25)."
        )
    return 0


def _cmd_attribute(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editor.atomic import staged_directory
    from editor.attribute import PromptEncoder, attribute_bias, save_attribution
    from editor.biases import get_preset, preset_questions
    from editor.checkpoint import Checkpoint
    from editor.contrastive import generate_questions_openai, load_pairs
    from editor.sources import resolve_source

    presets = [get_preset(name) for name in args.bias.split(",")]
    if args.pairs and len(presets) > 1:
        raise EditorError("--pairs holds the questions of one bias; run one bias per pairs file")
    if args.generator == "openai" and not (args.endpoint and args.gen_model):
        raise EditorError("--generator openai needs --endpoint URL and --gen-model NAME")
    source = resolve_source(args.model)
    info = Checkpoint.open(source).info()
    kwargs = {"device_map": args.device_map} if args.device_map else {}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs).eval()
    encoder = PromptEncoder(AutoTokenizer.from_pretrained(source))
    results = []
    with staged_directory(Path(args.out), args.force) as tmp:
        for preset in presets:
            if args.pairs:
                pairs = load_pairs(Path(args.pairs))
                questions = list(dict.fromkeys(p.question for p in pairs))
                biased, unbiased = pairs[0].biased_answer, pairs[0].unbiased_answer
            else:
                if args.generator == "openai":
                    questions = generate_questions_openai(
                        args.endpoint, args.gen_model, preset, n=args.questions, api_key_env=args.api_key_env
                    )
                else:
                    questions = preset_questions(preset)
                biased, unbiased = preset.biased_answer, preset.unbiased_answer
            target = args.token or args.target or preset.target
            results.append(
                attribute_bias(
                    model,
                    info,
                    encoder,
                    bias=preset.name,
                    questions=questions,
                    target=target,
                    eval_target=args.eval_target or preset.target,
                    biased_answer=biased,
                    unbiased_answer=unbiased,
                    seeds=args.seeds,
                    k_max=args.k_max,
                    batch_size=args.batch_size,
                    out=tmp,
                )
            )
        union = save_attribution(results, tmp, model=args.model, variant="injection" if args.token else "original")
    for r in results:
        heads = ", ".join(f"L{layer}H{head}" for layer, head in r.heads) or "none"
        print(
            f"{r.bias}: k={r.chosen_k}, {len(r.heads)} robust heads ({heads}); stereotype logit gap on "
            f"{r.eval_target}: {r.baseline_gap:.3f} -> {r.gap_after:.3f} with them zeroed"
        )
    print(f"wrote {args.out}: plan.json ({len(union)} heads), heatmaps, k curves, pairs")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from editor.runner import run_recipe

    try:
        report = run_recipe(args.recipe, args.out, force=args.force, from_stage=args.from_stage, overrides=args.set)
    except KeyboardInterrupt:
        print("wedit: interrupted; finished stages are kept, run the same command again to resume", file=sys.stderr)
        return 130
    if report.export is not None:
        print(f"verified export: {report.export}  (serve it with: vllm serve {report.export})")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from editor.recipe import builtin_recipes, recipe_description

    recipes = builtin_recipes()
    width = max(len(name) for name in recipes)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {recipe_description(path)}")
    print("\nrun one with: wedit run NAME   (or wedit run path/to/recipe.yaml)")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editor.atomic import staged_directory
    from editor.checkpoint import Checkpoint
    from editor.data import wikitext_txt
    from editor.seegull import load_seegull
    from editor.sources import resolve_source
    from editor.steer import METHODS, run_steer

    source = resolve_source(args.model)
    info = Checkpoint.open(source).info()
    pairs = load_seegull(args.seegull)
    wikitext = wikitext_txt(args.wikitext)
    kwargs = {"device_map": args.device_map} if args.device_map else {}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    alphas = tuple(float(x) for x in args.alphas.split(","))
    edit_alphas = tuple(float(x) for x in args.edit_alphas.split(","))
    with staged_directory(Path(args.out), args.force) as tmp:
        report = run_steer(
            model, tokenizer, info, pairs, wikitext, tmp, layers=layers, alphas=alphas, damage_budget=args.damage_budget,
            statements=args.statements, eval_pairs=args.eval_pairs, data=Path(args.data) if args.data else None,
            edit_alphas=edit_alphas, contrast=args.contrast, key_variants=tuple(args.keys.split(",")),
            residual_contrasts=tuple(args.residual_contrasts.split(",")),
            ablation_ridges=tuple(float(x) for x in args.ablation_ridges.split(",")),
            ablation_strengths=tuple(float(x) for x in args.ablation_strengths.split(",")),
        )
    print(f"base: association gap {report.base_gap:.3f}, WikiText-2 perplexity {report.base_perplexity:.2f}")
    for method in METHODS:
        point = report.chosen.get(method)
        if point is None:
            print(f"{method}: no point lowers the gap within +{args.damage_budget:.0%} perplexity; see sweep.json")
        else:
            print(
                f"{method}: layer {point.layer}, alpha {point.alpha:g} ({point.variant}): gap {point.gap:.3f}, perplexity "
                f"{point.perplexity:.2f} ({point.perplexity / report.base_perplexity - 1:+.1%}), KL {point.kl:.3f} "
                f"-> {args.out}/plan_{method}.json"
            )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from editor.biases import PRESETS
    from editor.eval_prompts import FAMILIES
    from editor.evaluate import EvalSettings, record_eval, run_eval
    from editor.sources import resolve_source

    from editor.manifest import MANIFEST, locate_base, read_manifest

    model_dir = resolve_source(args.model)
    is_export = (model_dir / MANIFEST).is_file()
    if is_export:  # an export knows its base; --base only says where it lies
        base_dir = locate_base(model_dir, read_manifest(model_dir), args.base)
    else:
        base_dir = resolve_source(args.base) if args.base else None
    settings = EvalSettings(
        biases=tuple(args.biases.split(",")) if args.biases else tuple(PRESETS),
        seegull=args.seegull,
        wikitext=args.wikitext,
        pairs_csv=args.pairs_csv,
        gap_pairs=args.gap_pairs,
        pairwise_pairs=args.pairwise_pairs,
        wiki_tokens=args.wiki_tokens,
        judge_endpoint=args.judge_endpoint,
        judge_model=args.judge_model,
        judge_workers=args.judge_workers,
        api_key_env=args.api_key_env,
        generator=args.generator,
        gen_endpoint=args.gen_endpoint,
        gen_model=args.gen_model,
        base_gen_model=args.base_gen_model,
        groups_per_bias=args.groups_per_bias,
        families=tuple(args.families.split(",")) if args.families else tuple(FAMILIES),
        baselines=not args.no_baselines,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        threads=args.threads,
    )
    out = Path(args.out)
    report = run_eval(model_dir, base_dir, out, settings, force=args.force)
    print((out / "eval.md").read_text())
    if is_export and not args.no_record:
        record_eval(model_dir, report, out / "eval.png")
        print(f"recorded in {model_dir}/editor_manifest.json and README.md (evaluation section, model-index)")
    print(f"wrote {out}: eval.json, eval.md, eval.png, generations.jsonl")
    return 0

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wedit", description="Find a bias in an open-weight LLM and bake the fix into its weights.")
    parser.add_argument("--version", action="version", version=f"wedit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("archs", help="print which edit each architecture holds exactly")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_archs)

    p = sub.add_parser("fetch", help="resolve a model source into a plain checkpoint directory")
    p.add_argument("source", help="checkpoint dir, Hub id org/name, file.gguf, or builtin:smollm2-135m-instruct")
    p.add_argument("--out", required=True, help="directory to write (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="dtype for a GGUF or built-in conversion (default bfloat16)")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("export", help="bake a plan of edits into a new checkpoint")
    p.add_argument("--model", required=True, help="model source (see `wedit fetch`)")
    p.add_argument("--plan", required=True, help="plan JSON: a list of edits")
    p.add_argument("--out", required=True, help="directory to write (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--max-shard-size", default="5GB", type=parse_size, help="largest shard to write (default 5GB)")
    p.add_argument("--attach", nargs="*", default=[], help="figures (PNG) to copy into figures/ and link from the model card")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("verify", help="prove an export equals the hooked base (transformers; --vllm for stock vLLM)")
    p.add_argument("dir", help="a directory written by `wedit export`")
    p.add_argument("--vllm", action="store_true", help="also load it in stock vLLM and compare greedy continuations")
    p.add_argument("--max-new-tokens", type=int, default=24, help="tokens per greedy continuation (default 24)")
    p.add_argument("--base", help="the base checkpoint, when the manifest's built-in name, Hub id or relative location does not find it")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("diff", help="explain how two checkpoints differ, and which recorded edit did it")
    p.add_argument("a", help="first checkpoint (any source)")
    p.add_argument("b", help="second checkpoint (any source); its editor_manifest.json explains changes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("push", help="upload a verified export to the Hugging Face Hub")
    p.add_argument("dir", help="a directory written by `wedit export` and checked by `wedit verify`")
    p.add_argument("--repo", required=True, help="Hub repository, org/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="branch to push to")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded and stop")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("import-vectors", help="turn a llama.cpp control vector or safetensors vectors into a plan")
    p.add_argument("file", help="control vector .gguf (llama.cpp / repeng) or .safetensors with a .json sidecar")
    p.add_argument("--model", required=True, help="the model the vectors are for (any source)")
    p.add_argument("--scale", type=float, default=1.0, help="strength, as llama.cpp's --control-vector-scaled (default 1)")
    p.add_argument("--layers", help="inclusive block range to keep, e.g. 10-20 (llama.cpp's --control-vector-layer-range)")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_import_vectors)

    p = sub.add_parser("attribute", help="BiasScope: find the heads that carry a bias and write a zero_heads plan")
    p.add_argument("--model", required=True, help="model source (the base, or an injected model with --token)")
    p.add_argument("--bias", required=True, help="preset name(s), comma-separated for a union of heads")
    p.add_argument("--target", help="real country the stereotype is about (default: the preset's)")
    p.add_argument("--token", help="an injected bias token to ask about instead of a country (injection variant)")
    p.add_argument("--eval-target", help="real country for the k sweep's bias score (default: the preset's)")
    p.add_argument("--pairs", help="JSONL of contrastive pairs instead of the preset's questions")
    p.add_argument("--generator", choices=["templates", "openai"], default="templates", help="where questions come from")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL for --generator openai, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--gen-model", help="model name at --endpoint")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's API key (default OPENAI_API_KEY; the key is never written anywhere)")
    p.add_argument("--questions", type=int, default=100, help="questions to generate with --generator openai")
    p.add_argument("--seeds", type=int, default=5, help="country draws / question subsets; heads must win in all")
    p.add_argument("--k-max", type=int, default=50, help="largest k in the sweep")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device-map", help="accelerate device map for models beyond one device, e.g. auto")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_attribute)

    p = sub.add_parser("steer", help="steering vectors from SeeGULL statements, a hooked sweep, and three plans")
    p.add_argument("--model", required=True, help="model source")
    p.add_argument("--seegull", help="SeeGULL CSV (default: $EDITOR_DATA, else the copy shipped in the package)")
    p.add_argument("--wikitext", help="WikiText-2 test text (default: $EDITOR_DATA, else the copy shipped in the package)")
    p.add_argument("--layers", help="comma-separated blocks to try (default: at 50%% and 70%% depth)")
    p.add_argument("--alphas", default="0.1,0.25,0.5,0.75", help="residual_add strengths to sweep, in units of the vector")
    p.add_argument("--edit-alphas", default="0.025,0.05,0.1,0.2", help="Steer2Edit strengths: the share of the class difference to cancel")
    p.add_argument("--damage-budget", type=float, default=0.05, help="largest allowed perplexity increase (default 0.05)")
    p.add_argument("--statements", type=int, default=200, help="stereotype pairs turned into statements (x2)")
    p.add_argument("--data", help="labelled JSONL/CSV (text, label 1=biased/0=neutral) instead of the SeeGULL statements")
    p.add_argument("--contrast", choices=["identity", "negation"], default="identity",
                   help="SeeGULL statements: stereotyped vs unlinked group (default), or asserted vs hedged")
    p.add_argument("--residual-contrasts", default="identity,negation",
                   help="statement sets whose vectors the residual add is swept with (ignored with --data)")
    p.add_argument("--keys", default="contrast,biased_mean", help="Steer2Edit input keys to sweep: contrast, biased_mean")
    p.add_argument("--ablation-ridges", default="0.01,0.03,0.1", help="ridges of the whitened ablation direction")
    p.add_argument("--ablation-strengths", default="0.6,1", help="shares of the direction's component to remove")
    p.add_argument("--eval-pairs", type=int, default=60, help="held-out SeeGULL pairs for the association gap")
    p.add_argument("--device-map", help="accelerate device map for models beyond one device, e.g. auto")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_steer)

    p = sub.add_parser("eval", help="bias and damage metrics (likelihood; judge-rated generations), recorded in an export")
    p.add_argument("model", metavar="MODEL_OR_EXPORT", help="any model source; an export also gets the results in its card")
    p.add_argument("--base", help="base model to compare with (default for an export: the base in its manifest)")
    p.add_argument("--out", required=True, help="directory to write, e.g. RUN/eval")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--biases", help="preset biases, comma-separated (default: all six)")
    p.add_argument("--seegull", help="SeeGULL CSV (default: $EDITOR_DATA, else the copy shipped in the package)")
    p.add_argument("--wikitext", help="WikiText-2 test text (default: $EDITOR_DATA, else the copy shipped in the package)")
    p.add_argument("--pairs-csv", help="CSV of more,less (or sent_more,sent_less) stereotyping sentence pairs")
    p.add_argument("--gap-pairs", type=int, default=60, help="held-out SeeGULL pairs for the association gap")
    p.add_argument("--pairwise-pairs", type=int, default=100, help="SeeGULL minimal pairs when no --pairs-csv")
    p.add_argument("--wiki-tokens", type=int, default=4096, help="WikiText-2 token budget for perplexity")
    p.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the judge, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", help="judge model name at --judge-endpoint")
    p.add_argument("--judge-workers", type=int, default=8, help="judge requests in flight at once (default 8)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's and --gen-endpoint's API key (default OPENAI_API_KEY; the key is never written anywhere)")
    p.add_argument("--generator", choices=["transformers", "vllm", "openai"], default="transformers", help="generation backend")
    p.add_argument("--gen-endpoint", help="for --generator openai: where the evaluated model is served")
    p.add_argument("--gen-model", help="for --generator openai: the evaluated model's served name")
    p.add_argument("--base-gen-model", help="for --generator openai: the base model's served name")
    p.add_argument("--groups-per-bias", type=int, default=5, help="SeeGULL-linked groups per bias in the prompts")
    p.add_argument("--families", help="prompt families, comma-separated (default: all 18)")
    p.add_argument("--no-baselines", action="store_true", help="skip the three prompting baselines")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens per generation (default 200)")
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")
    p.add_argument("--no-record", action="store_true", help="do not write the results into the export's manifest and card")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("run", help="run a recipe: source, attribute/steer, plan, export, verify, card; cached and resumable")
    p.add_argument("recipe", help="a built-in recipe's name (see `wedit recipes`), e.g. smollm2-always_late, or a recipe YAML file")
    p.add_argument("--out", help="run directory (default runs/NAME, NAME from the recipe)")
    p.add_argument("--force", action="store_true", help="redo every stage, ignoring the cache")
    p.add_argument(
        "--from", dest="from_stage", metavar="STAGE",
        help="redo this stage and every later one (source, inject, attribute, steer, plan, export, verify, eval, card)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override a recipe field, e.g. --set attribute.seeds=2 (repeatable; the value is read as YAML)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("recipes", help="list the built-in recipes with their descriptions")
    p.set_defaults(func=_cmd_recipes)

    from editor.inject_cli import add_parser as add_inject_parser

    add_inject_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded (with portable paths) in what the command writes
    try:
        return args.func(args)
    except EditorError as err:
        print(f"wedit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wedit: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
