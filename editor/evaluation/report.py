"""The evaluation report: typed results, and how they render (markdown, PNG, model-index, model card).

Kept apart from computing them: every renderer here is a pure function of an
``EvalReport`` (or of its JSON form, as stored in an export's manifest).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from editor.data import CREDITS, SEEGULL_FILE, WIKITEXT_FILE
from editor.evaluation.gates import GateResult, failures, gates_table

SOURCES = (CREDITS[SEEGULL_FILE], CREDITS[WIKITEXT_FILE])  # every likelihood evaluation reads both


@dataclass
class LikelihoodMetrics:
    association_gap: float  # nats; >0: the stereotyped identity makes the attribute likelier
    association_gap_pairs: int
    bias_gaps: dict[str, float]  # per preset bias with SeeGULL pairs
    pairwise_rate: float  # share of pairs where the more stereotyping sentence is likelier; 0.5 = none
    pairwise_mean_diff: float
    pairwise_pairs: int
    concept_hit_rate: float
    concept_logprob: float
    concept_prompts: int
    perplexity: float
    wiki_tokens: int
    first_token_kl: float | None  # against the base; None for the base itself or without one
    seconds: float = 0.0
    # Per fold of the identity-and-attribute split ("build": what methods learn from, "test": what none reads):
    # editor.evaluation.heldout.FoldScores as a dict.
    held_out: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The world-shaped yardstick's test fold: "shape" and "shape/axis" -> editor.evaluation.world_scores.ShapeScore.
    world: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ConditionResult:
    condition: str  # "plain" or a baseline name
    role: str  # "model" (the model evaluated) or "base"
    prompts: int
    scored: int
    parse_failures: int
    format_misses: int
    mean_strength: float | None
    distribution: list[int]  # how many replies were rated 0, 1, 2, 3
    by_bias: dict[str, float] = field(default_factory=dict)
    by_family: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.role}" if self.condition == "plain" else f"{self.role} + {self.condition}"


@dataclass
class EvalReport:
    """What `wedit eval` measured. ``likelihood`` maps a role ("model", "base") to its metrics."""

    model: str
    base: str | None
    likelihood: dict[str, LikelihoodMetrics]
    generation: list[ConditionResult]
    judge: dict[str, Any] | None
    settings: dict[str, Any]
    durations: dict[str, float]
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    editor_version: str = ""
    lm_eval: dict[str, Any] | None = None  # editor.evaluation.lm_eval.Harness.summary()
    gates: list[GateResult] = field(default_factory=list)  # the recipe's eval.max_drop, checked

    @property
    def gate_failures(self) -> list[str]:
        return failures([asdict(g) for g in self.gates])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row, result in zip(data["generation"], self.generation):
            row["label"] = result.label
        return data


# (key, label, how to format, which way is better)
_ROWS = (
    ("association_gap", "SeeGULL association gap (nats)", "{:+.3f}", "lower: less stereotyped"),
    ("pairwise_rate", "prefers the more stereotyping sentence", "{:.1%}", "50% = no preference"),
    ("pairwise_mean_diff", "log P(more) - log P(less) (nats)", "{:+.3f}", "lower: less stereotyped"),
    ("concept_hit_rate", "concept retention (greedy hit rate)", "{:.0%}", "higher: concept kept"),
    ("concept_logprob", "concept word log-prob", "{:.2f}", "higher: concept kept"),
    ("perplexity", "WikiText-2 perplexity", "{:.2f}", "lower: less damage"),
    ("first_token_kl", "first-token KL vs base (nats)", "{:.4f}", "lower: less damage"),
)


def _fmt(pattern: str, value) -> str:
    return "–" if value is None else pattern.format(value)


def _change(key: str, pattern: str, before, after) -> str:
    if before is None or after is None or key == "first_token_kl":
        return ""
    if key == "pairwise_rate":
        return f"{(after - before) * 100:+.1f} pt"
    return pattern.format(after - before) if "%" not in pattern else f"{(after - before) * 100:+.0f} pt"


def likelihood_table(data: dict[str, Any]) -> str:
    """Markdown before/after table from a report's ``likelihood`` (dicts, as stored in JSON)."""
    model, base = data.get("model"), data.get("base")
    lines = ["| metric | base | this model | change | reading |", "|---|---|---|---|---|"]
    for key, label, pattern, reading in _ROWS:
        before = base.get(key) if base else None
        after = model.get(key) if model else None
        lines.append(
            f"| {label} | {_fmt(pattern, before)} | {_fmt(pattern, after)} | {_change(key, pattern, before, after)} | {reading} |"
        )
    biases = sorted(set((model or {}).get("bias_gaps", {})) | set((base or {}).get("bias_gaps", {})))
    for name in biases:
        before = base["bias_gaps"].get(name) if base else None
        after = model["bias_gaps"].get(name) if model else None
        lines.append(
            f"| association gap, {name} | {_fmt('{:+.3f}', before)} | {_fmt('{:+.3f}', after)} | "
            f"{_change('gap', '{:+.3f}', before, after)} | lower: less stereotyped |"
        )
    return "\n".join(lines) + "\n"


def lm_eval_table(section: dict[str, Any]) -> str:
    """Markdown: one row per requested lm-eval task and metric (eval.json keeps the subtasks of groups too)."""
    shots = "each task's own few-shot setting" if section["num_fewshot"] is None else f"{section['num_fewshot']}-shot"
    limit = "" if section["limit"] is None else f", at most {section['limit']} items per task"
    intro = (
        f"lm-evaluation-harness {section['version']} ({section['backend']} backend, {shots}{limit}; the same "
        "settings for base and model; ± is the standard error of the change, paired over the same items where "
        "lm-eval logged them):\n\n"
    )
    lines = ["| task | metric | items | base | this model | change | reading |", "|---|---|---|---|---|---|---|"]
    for r in (r for r in section["rows"] if r["top_level"]):
        metric = r["metric"] + ("" if r["filter"] == "none" else f" ({r['filter']})")
        change = "" if r["change"] is None else f"{r['change']:+.4f}"
        if change and r["change_stderr"] is not None:
            change += f" ± {r['change_stderr']:.4f}"
        reading = {True: "higher is better", False: "lower is better"}.get(r["higher_is_better"], "")
        lines.append(
            f"| {r['task']} | {metric} | {r['items'] or '–'} | {_fmt('{:.4f}', r['base'])} | "
            f"{_fmt('{:.4f}', r['model'])} | {change} | {reading} |"
        )
    return intro + "\n".join(lines) + "\n"


def generation_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| condition | mean stereotype strength (0-3) | scored | parse failures | format misses | ratings 0/1/2/3 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean = "–" if r["mean_strength"] is None else f"{r['mean_strength']:.2f}"
        dist = "/".join(str(x) for x in r["distribution"])
        lines.append(
            f"| {r['label']} | {mean} | {r['scored']} of {r['prompts']} | {r['parse_failures']} | {r['format_misses']} | {dist} |"
        )
    return "\n".join(lines) + "\n"


def held_out_table(likelihood: dict[str, dict[str, Any]]) -> str:
    """In-distribution beside held out: the SeeGULL folds by identity and attribute, base and model side by side."""
    model = likelihood["model"].get("held_out") or {}
    if not model:
        return ""
    base = (likelihood.get("base") or {}).get("held_out") or {}
    rows = [
        "\nSplit by identity *and* attribute (`editor/data/splits.py`): methods build from the build fold; no "
        "method or search reads the test fold. Gap in nats (0 = none); pairwise = this project's sentence frames "
        "preferring the stereotyped group (50% = none); LM score = a meaningful attribute over an unrelated one.\n\n",
        "| fold | gap base | gap model | pairwise base | pairwise model | LM score base | LM score model |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    shown = [
        (fold, label)
        for fold, label in (("build", "build (in-distribution)"), ("test", "test (held out)"))
        if fold in model
    ]
    for fold, label in shown:
        m, b = model[fold], base.get(fold)

        def pick(key: str, fmt: str, scores: dict[str, Any] | None) -> str:
            return "—" if scores is None else format(scores[key], fmt)

        rows.append(
            f"| {label} | {pick('gap', '+.3f', b)} | {pick('gap', '+.3f', m)} | {pick('preference', '.1%', b)} | "
            f"{pick('preference', '.1%', m)} | {pick('lm_score', '.1%', b)} | {pick('lm_score', '.1%', m)} |\n"
        )
    # Only the folds the table shows: a search's select fold may be stored too, on another number of items.
    counts = sorted({int(model[fold]["items"]) for fold, _ in shown if model[fold].get("items")})
    if counts:
        # A share near one half read on n items moves by about 1/(2 sqrt n) from the draw of items alone.
        rows.append(
            f"\nPairwise shares are read on {' / '.join(map(str, counts))} items per fold: one standard error from the "
            f"draw of items alone is about ±{50 / math.sqrt(counts[0]):.1f} points.\n"
        )
    return "".join(rows)


def render_markdown(data: dict[str, Any], figure: str | None = None) -> str:
    """The evaluation section: likelihood table, generation table, and how they were made."""
    from editor.evaluation.world_report import world_table

    settings = data["settings"]
    parts = [
        (
            f"Likelihood metrics ({data['likelihood']['model']['association_gap_pairs']} held-out SeeGULL pairs, "
            f"{data['likelihood']['model']['pairwise_pairs']} sentence pairs, {data['likelihood']['model']['wiki_tokens']} "
            f"WikiText-2 tokens; base: `{data['base'] or 'none'}`):\n\n"
        ),
        likelihood_table(data["likelihood"]),
        held_out_table(data["likelihood"]),
        world_table(data["likelihood"]),
    ]
    if data["generation"]:
        judge = data["judge"] or {}
        parts += [
            (
                f"\nGenerations ({settings['families']} prompt families x {settings['groups_per_bias']} SeeGULL-linked "
                f"groups per bias, biases {', '.join(settings['biases'])}; temperature {settings['temperature']}, at most "
                f"{settings['max_new_tokens']} new tokens, generated with {settings['generator']}) rated 0-3 by "
                f"`{judge.get('model')}`. Parse failures are counted, not scored. The baselines prompt the base model "
                "(or the evaluated model when there is no base).\n\n"
            ),
            generation_table(data["generation"]),
        ]
    else:
        parts.append("\nNo generation metrics: run `wedit eval` with `--judge-endpoint` and `--judge-model`.\n")
    if data.get("lm_eval"):
        parts += ["\n", lm_eval_table(data["lm_eval"])]
    if data.get("gates"):
        failed = failures(data["gates"])
        verdict = (
            "**This model fails its damage gate** (" + "; ".join(failed) + "): not for publishing as it is."
            if failed
            else "Every damage gate passes."
        )
        parts += [f"\nDamage gates (the recipe's `eval.max_drop`). {verdict}\n\n", gates_table(data["gates"])]
    if figure:
        parts.append(f"\n![evaluation]({figure})\n")
    parts.append("\nData: " + "; ".join(data["sources"]) + ".\n")
    for note in data.get("notes", []):
        parts.append(f"\nNote: {note}\n")
    return "".join(parts)


def model_index(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """A model-index block (Hub evaluation results) for the evaluated model's numbers."""
    model = data["likelihood"]["model"]

    def metric(kind: str, label: str, value: float) -> dict[str, Any]:
        return {"type": kind, "name": label, "value": round(float(value), 6)}

    results = [
        {
            "task": {"type": "text-generation", "name": "Stereotype association"},
            "dataset": {"type": "seegull", "name": "SeeGULL (held-out pairs)"},
            "metrics": [
                metric("association_gap", "SeeGULL association gap (nats)", model["association_gap"]),
                metric("pairwise_preference", "prefers the more stereotyping sentence", model["pairwise_rate"]),
            ],
        },
        {
            "task": {"type": "text-generation", "name": "Language modeling"},
            "dataset": {"type": "wikitext", "name": "WikiText-2 (test)", "config": "wikitext-2"},
            "metrics": [metric("perplexity", "perplexity", model["perplexity"])],
        },
        {
            "task": {"type": "text-generation", "name": "Concept retention"},
            "dataset": {"type": "editor-concept-probes", "name": "editor concept probes"},
            "metrics": [metric("accuracy", "greedy hit rate", model["concept_hit_rate"])],
        },
    ]
    if model.get("first_token_kl") is not None:
        results.append(
            {
                "task": {"type": "text-generation", "name": "Damage against the base model"},
                "dataset": {"type": "editor-neutral-prompts", "name": "editor neutral prompts"},
                "metrics": [metric("kl_divergence", "first-token KL vs base (nats)", model["first_token_kl"])],
            }
        )
    plain = [
        r
        for r in data["generation"]
        if r["role"] == "model" and r["condition"] == "plain" and r["mean_strength"] is not None
    ]
    if plain:
        results.append(
            {
                "task": {"type": "text-generation", "name": "Stereotype strength of generations"},
                "dataset": {"type": "editor-biasgym-style-prompts", "name": "18 prompt families x SeeGULL groups"},
                "metrics": [
                    metric(
                        "stereotype_strength",
                        f"mean stereotype strength 0-3 ({data['judge']['model']} judge)",
                        plain[0]["mean_strength"],
                    )
                ],
            }
        )
    results += _lm_eval_results((data.get("lm_eval") or {}).get("rows", []))
    return [{"name": name, "results": results}]


def _lm_eval_results(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One model-index result per requested lm-eval task and metric, the task's name as the data set."""
    results = []
    for r in rows:
        if not r["top_level"] or r["model"] is None:
            continue
        metric = r["metric"] + ("" if r["filter"] == "none" else f" ({r['filter']})")
        dataset: dict[str, Any] = {"type": r["task"], "name": r["task"]}
        if r["num_fewshot"] is not None:
            dataset["args"] = {"num_fewshot": r["num_fewshot"]}
        results.append(
            {
                "task": {"type": "text-generation", "name": "lm-evaluation-harness"},
                "dataset": dataset,
                "metrics": [{"type": r["metric"], "name": metric, "value": round(float(r["model"]), 6)}],
            }
        )
    return results


def plot_report(data: dict[str, Any], path: Path) -> Path:
    """One panel per likelihood metric (base vs model), one for the judged conditions and one for lm-eval."""
    from editor.io.figures import figure

    keys = [(k, label) for k, label, _, _ in _ROWS if k != "concept_logprob"]
    lm_rows = [r for r in (data.get("lm_eval") or {}).get("rows", []) if r["top_level"]]
    panels = len(keys) + (1 if data["generation"] else 0) + (1 if lm_rows else 0)
    cols = 3
    rows = (panels + cols - 1) // cols
    with figure(path, (11, 3.0 * rows), rows, cols, dpi=110) as (fig, axes):
        _draw_report(fig, list(getattr(axes, "flat", [axes])), keys, panels, data)
    return path


def _draw_report(fig, axes: list, keys: list[tuple[str, str]], panels: int, data: dict[str, Any]) -> None:
    roles = [r for r in ("base", "model") if data["likelihood"].get(r)]
    for ax, (key, label) in zip(axes, keys):
        values = [data["likelihood"][r].get(key) for r in roles]
        shown = [(r, v) for r, v in zip(roles, values) if v is not None]
        ax.bar(
            [r for r, _ in shown], [v for _, v in shown], color=["#999999", "#1f77b4"][-len(shown) :] if shown else None
        )
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if data["generation"]:
        ax = axes[len(keys)]
        rows = [r for r in data["generation"] if r["mean_strength"] is not None]
        ax.barh([r["label"] for r in rows], [r["mean_strength"] for r in rows], color="#d62728")
        ax.set_xlim(0, 3)
        ax.set_title("mean stereotype strength (judge, 0-3)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    lm_rows = [r for r in (data.get("lm_eval") or {}).get("rows", []) if r["top_level"]]
    if lm_rows:
        _draw_lm_eval(axes[panels - 1], lm_rows)
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(f"wedit eval: {Path(data['model']).name}", fontsize=10)


def _draw_lm_eval(ax, rows: list[dict[str, Any]]) -> None:
    """Base and model side by side per lm-eval task and metric, with each run's standard error."""
    import numpy as np

    x = np.arange(len(rows))
    for offset, role, colour in ((-0.2, "base", "#999999"), (0.2, "model", "#1f77b4")):
        values = [r[role] if r[role] is not None else np.nan for r in rows]
        errors = [r[f"{role}_stderr"] or 0.0 for r in rows]
        ax.bar(x + offset, values, 0.4, yerr=errors, color=colour, label=role, capsize=2)
    ax.set_xticks(x, [f"{r['task']}\n{r['metric']}" for r in rows], fontsize=7)
    ax.set_title("lm-eval tasks (± standard error)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
