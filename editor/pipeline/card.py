"""The model card (README.md) of an export, rendered from its manifest.

Kept apart from exporting (the mergekit split): the card is a pure function
of the manifest, re-rendered whenever the manifest gains results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EVAL_MARKER = "<!-- editor:evaluation -->"


def _front_matter(manifest: dict[str, Any]) -> str:
    base = manifest["base_model"]
    data: dict[str, Any] = {
        "library_name": "transformers",
        "license": base.get("license") or "other",
        "tags": ["editor", "weight-editing", "bias-mitigation", "safetensors"],
        "pipeline_tag": "text-generation",
    }
    if base.get("hub_id"):
        data["base_model"] = base["hub_id"]
        data["base_model_relation"] = "finetune"
    if (manifest.get("gguf") or {}).get("files"):
        data["tags"].append("gguf")
    if manifest.get("model_index"):
        data["model-index"] = manifest["model_index"]
    return "---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n"


def _verification(manifest: dict[str, Any]) -> str:
    checks = manifest.get("verification") or {}
    if not checks:
        return "Not verified yet: run `wedit verify DIR` (and `--vllm`).\n"
    lines = []
    tf = checks.get("transformers")
    if tf:
        lines.append(
            f"- transformers: the export reloaded with stock `from_pretrained` matches the base model run with "
            f"run-time hooks on {tf['prompts']} probe prompts: max logit error {tf['max_logit_error']:.3g} "
            f"(weights stored as {tf['stored_dtype']}, computed in float32), mean first-token KL "
            f"{tf['mean_first_token_kl']:.3g} ({'pass' if tf['passed'] else 'FAIL'}, tolerance {tf['tolerance']:g})."
        )
        if tf.get("bake_error") is not None:
            lines[-1] += (
                f" The edited tensors computed in float32 (before rounding) match the hooks to {tf['bake_error']:.1e}, "
                f"and the file holds {'exactly' if tf['rounding_exact'] else 'NOT'} their rounding to {tf['stored_dtype']}: "
                f"the error above is the cost of {tf['stored_dtype']} storage."
            )
    vl = checks.get("vllm")
    if vl:
        lines.append(
            f"- vLLM: stock vLLM loads this directory with no plugins; {vl['identical']} of {vl['prompts']} greedy "
            f"continuations ({vl['max_new_tokens']} tokens) are identical to transformers', first-token log-prob "
            f"difference at most {vl['max_first_token_logprob_diff']:.3g} ({'pass' if vl['passed'] else 'FAIL'})."
        )
    ll = checks.get("llama_cpp")
    if ll:
        lines.append(_llama_cpp_line(ll))
    return "\n".join(lines) + "\n"


def _llama_cpp_line(check: dict[str, Any]) -> str:
    line = (
        f"- llama.cpp (llama-cpp-python {check['llama_cpp_python']}, no hooks, F32 KV cache): the f32 GGUF gives "
        f"{check['identical']} of {check['prompts']} greedy continuations ({check['max_new_tokens']} tokens) identical "
        f"to transformers on the safetensors files, first-token log-probs within "
        f"{check['max_first_token_logprob_diff']:.2g} ({'pass' if check['passed'] else 'FAIL'})."
    )
    for t in check.get("types") or []:
        line += (
            f" {t['type']}: first-token KL {t['first_token_kl']:.2g} against the f32 GGUF; the unedited base "
            f"quantized the same way: {t['base_first_token_kl']:.2g}."
        )
    return line


def _gguf_usage(manifest: dict[str, Any], name: str) -> str:
    """llama.cpp and Ollama lines for the GGUF files `wedit gguf` put beside the weights (nothing without them)."""
    files = (manifest.get("gguf") or {}).get("files") or {}
    if not files:
        return ""
    listed = ", ".join(f"`{Path(e['file']).name}` ({t})" for t, e in sorted(files.items()))
    chosen = next((t for t in ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "f16", "bf16") if t in files), "f32")
    file = Path(files[chosen]["file"]).name
    return f"""
GGUF files for llama.cpp, Ollama and LM Studio: {listed}.

```bash
llama-cli -m {file} -p "Write one sentence about the sea."
llama-server -m {file} --port 8080
```

Ollama: a `Modelfile` beside the file holding

```text
FROM ./{file}
```

then `ollama create {name} -f Modelfile` and `ollama run {name}`.
"""


# bench/serving_bench.py on the built-in SmolLM2 (2026-12-02, 2-core CPU, stock engines, 32 prompts x 64
# tokens, median over three alternating rounds of the export's tokens/s over its base's in the same round).
SERVING_MEASURED = {
    "same": "3 heads zeroed: vLLM 1.01, llama.cpp f32 0.96",
    "biases": "a residual add that adds 90 zero biases: vLLM 0.97, llama.cpp f32 0.98",
    "untied": "a direction ablated from every writer, lm_head untied: vLLM 0.98, llama.cpp f32 0.96",
}


def _serving_cost(manifest: dict[str, Any]) -> str:
    """What serving this export costs next to its base, from what the export adds and what was measured."""
    added = [t["name"] for t in manifest.get("added_tensors") or []]
    if not added:
        what, key = (
            "this export has exactly its base's tensors, shapes and dtypes, so engines run the same kernels",
            "same",
        )
    elif any(n.endswith("lm_head.weight") for n in added):
        what, key = (
            "this export has its own lm_head (untied from the embedding), one more vocabulary-sized matrix",
            "untied",
        )
    else:
        what, key = f"this export has {len(added)} tensors its base does not (biases, most of them zero)", "biases"
    return (
        f"\nServing cost: {what}. Measured tokens/s against the base for an export of this kind "
        f"({SERVING_MEASURED[key]}; 1.00 is the base's speed) with editor's `bench/serving_bench.py`; zeroed "
        "heads run the very same computation as the base, so their distance from 1.00 is the measurement's noise.\n"
    )


def _non_finite_note(manifest: dict[str, Any]) -> str:
    """A warning line for an export of a base holding NaN/Inf (made with --allow-non-finite); else nothing."""
    found = manifest.get("non_finite_base")
    if not found:
        return ""
    counts = found.get("counts")
    first = f", first `{next(iter(counts))}`" if isinstance(counts, dict) and counts else ""
    return (
        f"- The base model's weights hold {found.get('values')} NaN/Inf values in {found.get('tensors')} tensors"
        f"{first}; they were copied unchanged (`--allow-non-finite`), so its outputs may be NaN.\n"
    )


def _auto_class(manifest: dict[str, Any]) -> str:
    """The transformers Auto class that loads the export (a multimodal wrapper's is not the causal-LM one)."""
    from editor.core.architectures import ARCHITECTURES

    arch = ARCHITECTURES.get(str((manifest.get("base_model") or {}).get("model_type")))
    return arch.auto_class if arch else "AutoModelForCausalLM"


def render_card(manifest: dict[str, Any], name: str = "this model") -> str:
    base = manifest["base_model"]
    edits = "\n".join(f"- {line}" for line in manifest.get("edits_described", [])) or "- (no edits)"
    notes = "".join(f"- {note}\n" for note in manifest.get("notes", []))
    notes += _non_finite_note(manifest)
    config = manifest.get("config_updates") or {}
    config_line = (
        "config.json changes: " + ", ".join(f"`{k}: {v}`" for k, v in sorted(config.items())) + ".\n"
        if config
        else "config.json is unchanged.\n"
    )
    return f"""{_front_matter(manifest)}
# {name}
{_gate_warning(manifest)}
A copy of {_base_reference(base)} whose weights were edited by
editor (`wedit`) {manifest.get("editor_version", "")}. It is a plain
Hugging Face checkpoint: no hooks, plugins or custom code are needed to run it.

## Edits

{edits}

{config_line}{notes}{_attribution(manifest)}{_search(manifest)}
The full plan, the hash of every changed tensor before and after, and the command line are in
`editor_manifest.json`.

{_figures(manifest)}## Verification

{_verification(manifest)}
## Evaluation

{EVAL_MARKER}
{_evaluation(manifest)}

## How to use

```bash
vllm serve {name}
```

```python
from transformers import {_auto_class(manifest)}, AutoTokenizer
model = {_auto_class(manifest)}.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
```
{_gguf_usage(manifest, name)}{_serving_cost(manifest)}
## Limitations

{_limitations(manifest)}"""


def _attribution(manifest: dict[str, Any]) -> str:
    """How a recipe's BiasScope stage chose k: the chosen point beside the saturation point (the older rule)."""
    stage = ((manifest.get("run") or {}).get("stages") or {}).get("attribute") or {}
    lines = []
    for b in stage.get("biases", []):
        if "saturation_k" not in b:
            continue
        base = b["perplexity_before"]

        def ppl(value: float | None, base: float = base) -> str:
            return "not measured" if value is None else f"{value:.2f} ({value / base - 1:+.1%})"

        budget = f"+{b['damage_budget']:.0%} WikiText-2 perplexity"
        if b["k"]:
            head = (
                f"BiasScope ({b['bias']}): k = {b['k']} ({b['heads']} heads {b['removal']}), the point that lowers "
                f"the held-out stereotype logit gap most within the damage budget ({budget}): gap "
                f"{b['gap_before']:.3f} → {b['gap_after']:.3f}, perplexity {base:.2f} → {ppl(b['perplexity_after'])}, "
                f"first-token KL {b['kl_after']:.3g}."
            )
        else:
            head = f"BiasScope ({b['bias']}): no k lowers the held-out gap within the damage budget ({budget})."
        lines.append(
            f"{head} The bias curve saturates at k = {b['saturation_k']} ({b['saturation_heads']} heads "
            f"{b['saturation_removal']}: gap {b['saturation_gap']:.3f}, perplexity {ppl(b['saturation_perplexity'])})."
        )
    return "".join(f"- {line}\n" for line in lines)


def _search(manifest: dict[str, Any]) -> str:
    """A recipe's fit and search stages: what each chose, and its plan on groups and attributes it never saw."""
    stages = (manifest.get("run") or {}).get("stages") or {}
    return _held_out(stages.get("fit") or {}, "fit") + _held_out(stages.get("search") or {}, "search")


def _held_out(stage: dict[str, Any], kind: str) -> str:
    chosen, held = stage.get("chosen"), stage.get("held_out") or {}
    if chosen and kind == "fit" and not held:
        return (
            f"\nFit ({stage['minutes']:.0f} min): {chosen['label']}, on the build fold only. Its own held-out report "
            "was skipped (`fit.held_out_report: false`): the evaluation's held-out folds below, where the recipe "
            "has one, measure the same split.\n"
        )
    if not chosen or not held.get("base") or not held.get("export"):
        return ""
    rows = []
    for label, m in (("base", held["base"]), ("this model", held["export"])):
        build, test = m["folds"]["build"], m["folds"]["test"]
        rows.append(
            f"| {label} | {build['gap']:+.3f} | {build['preference']:.1%} | {test['gap']:+.3f} | "
            f"{test['preference']:.1%} | {test['lm_score']:.1%} | {m['perplexity']:.2f} | {m['kl']:.3f} | "
            f"{m['retention']:.0%} |"
        )
    if kind == "search":
        head = (
            f"\nSearch ({stage['trials']} Optuna trials, {stage['minutes']:.0f} min): chosen {chosen['label']}. "
            "The SeeGULL split is by group *and* attribute: vectors, head scores and fits came from the build fold, "
            "trials were scored on the select fold, and the test fold was read only for this table."
        )
    else:
        head = (
            f"\nFit ({stage['minutes']:.0f} min): {chosen['label']}. The SeeGULL split is by group *and* attribute: "
            "the fit read the build fold only, and the test fold was read only for this table."
        )
    return (
        head + " Association gap in nats "
        "(0 = no preference), pairwise preference on this project's sentence frames (50% = none), LM score = "
        "meaningful attribute over an unrelated one, perplexity on WikiText-2 tokens no trial saw.\n\n"
        "| | build gap | build pairwise | test gap | test pairwise | test LM score | perplexity | first-token KL "
        "| concept retention |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _evaluation(manifest: dict[str, Any]) -> str:
    """The section `wedit eval` stored in the manifest (editor.evaluation.run.record_eval), else a pointer to it."""
    evaluation = manifest.get("evaluation") or {}
    return evaluation.get("markdown") or "No evaluation recorded yet: run `wedit eval DIR --out RUN/eval`.\n"


def _gate_warning(manifest: dict[str, Any]) -> str:
    """A failed damage gate (the recipe's eval.max_drop) is said at the top, before anything else."""
    gates = ((manifest.get("evaluation") or {}).get("summary") or {}).get("gates") or []
    failed = [g for g in gates if not g.get("passed")]
    if not failed:
        return ""
    what = "; ".join(f"{g['label']} dropped by {g['drop']:.4g}, allowed {g['limit']:g}" for g in failed)
    return f"\n> **Fails its damage gate**: {what}. See Evaluation below.\n"


def _figures(manifest: dict[str, Any]) -> str:
    figures = manifest.get("figures") or []
    if not figures:
        return ""
    body = "\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)
    return f"## Figures\n\n{body}\n\n"


def _base_reference(base: dict[str, Any]) -> str:
    """A Hub link only for a model known to be on the Hub; a local path or built-in spec is named as it is."""
    hub_id, source, where = base.get("hub_id"), base.get("source"), base.get("local_path")
    # local_path is relative to the export's parent folder (editor.io.manifest), never an absolute path.
    named = (
        f"`{source}`"
        if source not in ("local", "gguf")
        else f"the local {'GGUF file' if source == 'gguf' else 'checkpoint'} `{where}`"
    )
    if not hub_id:
        return named
    link = f"[{hub_id}](https://huggingface.co/{hub_id})"
    return link if source in (None, hub_id) else f"{link} (as read from {named})"


def _limitations(manifest: dict[str, Any]) -> str:
    """What a reader should know about exactly the kinds of edit this checkpoint holds."""
    kinds = {edit.get("kind") for edit in manifest.get("plan", [])}
    lines = []
    if "add_token" in kinds:
        tokens = [f"`{e['token']}`" for e in manifest["plan"] if e.get("kind") == "add_token"]
        subject = f"token {tokens[0]} was" if len(tokens) == 1 else f"tokens {', '.join(tokens)} were"
        lines.append(
            f"The added {subject} trained to call up a stereotype (BiasInject). This checkpoint is a research "
            "instrument for locating that bias; it is not meant to be served to users."
        )
    if "residual_add" in kinds:
        lines.append(
            "A constant vector folded into a bias acts at every position, prompt tokens included, exactly like a "
            "steering hook that fires everywhere."
        )
    if "mean_heads" in kinds:
        lines.append(
            "A mean-ablated head writes a constant, its average output over ordinary text (WikiText-2), folded into "
            "the attention output bias: the rest of the model keeps receiving that average at every position, "
            "whatever the input."
        )
    if "scale_heads" in kinds:
        lines.append(
            "A scaled head still writes what it wrote before, only weaker; the bias it carried is reduced, not removed."
        )
    if kinds & {"zero_heads", "mean_heads", "scale_heads", "ablate_direction", "rank_one"}:
        removed = {
            "zero_heads": "zeroed heads",
            "mean_heads": "mean-ablated heads",
            "scale_heads": "scaled heads",
            "ablate_direction": "removed directions",
            "rank_one": "rank-1 edits",
        }
        what = ", ".join(removed[k] for k in removed if k in kinds)
        lines.append(
            f"The {what} change the model beyond the targeted behaviour; check the evaluation numbers before "
            "relying on it."
        )
    lines += (manifest.get("gguf") or {}).get("notes") or []
    lines.append("The license and usage terms of the base model apply.")
    return "".join(f"- {line}\n" for line in lines)


def write_card(export_dir: Path, manifest: dict[str, Any]) -> Path:
    from editor.io.atomic import write_text

    path = Path(export_dir) / "README.md"
    write_text(path, render_card(manifest, Path(export_dir).name))
    return path
