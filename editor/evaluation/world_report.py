"""The world-shaped yardstick's section of an evaluation report: each shape and axis, base beside model, and the
minimal pairs' whole sentences read apart (scores from ``editor.evaluation.world``)."""

from __future__ import annotations

import math
from typing import Any

from editor.evaluation.world_scores import share_removed

WORLD_READING = {
    "contexts": "stereotype over anti-stereotype completion, % (50 = none)",
    "pairs": "the attribute likelier in the stereotyped group's sentence than in the other's, % (50 = none)",
    "questions": "ambiguous questions' bias score (0 = none)",
}


def world_table(likelihood: dict[str, dict[str, Any]]) -> str:
    """The world-shaped yardstick: each shape and axis as written, with the group swapped, and the group-dependent
    part (own - swapped) with its standard error, base beside model, and the share of it removed."""
    model = likelihood["model"].get("world") or {}
    if not model:
        return ""
    base = (likelihood.get("base") or {}).get("world") or {}
    rows = [
        "\nThe world-shaped yardstick (`editor/evaluation/world.py`, test fold: groups no fit or search read). Each "
        "score is read on the items as written and with the group swapped for other groups of the axis and fold "
        "linked to neither attribute (their mean, with several swaps per item), each group swapped in as often as "
        "it is stereotyped, so that what a name does to any sentence cancels; the group-dependent part is their "
        "difference (± one standard error over items; in brackets, clustered by the stereotyped group, which is how "
        "differently it would read with another draw of a fold's few dozen groups; for the pairs, once each name's "
        "own effect is taken out). "
        "Nats: the mean log-likelihood difference behind the choice (for questions, how much more the stereotype's "
        "question than a control attribute's points at the stereotyped group's person), whose group-dependent part "
        "is far less noisy. The share removed is printed where the base's part is over two standard errors over "
        "items, ± its standard error clustered by the stereotyped group, and marked * where the base's part is not "
        "over two of its clustered errors: a share another draw of groups may undo.\n\n",
        "| shape | axis | items | base: own / swapped | base: group-dependent | model: own / swapped | "
        "model: group-dependent | group-dependent nats, base -> model | removed |\n",
        "|---|---|---|---|---|---|---|---|---|\n",
    ]
    for key, m in model.items():
        b = base.get(key)

        def pair(s: dict[str, Any] | None) -> str:
            return "—" if s is None else f"{s['own']:.1f} / {s['swapped']:.1f}"

        def dep(s: dict[str, Any] | None) -> str:
            return "—" if s is None else _part(s, "dependent", "dependent_se", 1)

        def nats_of(s: dict[str, Any]) -> str:
            return _part(s, "nats_dependent", "nats_dependent_se", 3)

        nats = nats_of(m)
        removed = "—"
        if b is not None:
            nats = f"{nats_of(b)} -> {nats}"
            if b["nats_dependent"] > 2 * b["nats_dependent_se"]:  # a part to remove, outside its noise
                share, se = share_removed(b, m)
                removed = f"{share:.0%}" + (f" ± {se:.0%}" if math.isfinite(se) else "") + " (nats)"
                if b.get("nats_dependent_se_groups", 0.0) * 2 >= b["nats_dependent"]:  # NaN: one group, no mark
                    removed += "*"
        label = m["axis"] if m["axis"] != "all" else "**all**"
        rows.append(
            f"| {m['shape']} | {label} | {m['items']} | {pair(b)} | {dep(b)} | {pair(m)} | {dep(m)} | {nats} | {removed} |\n"
        )
    extra = [f"{shape}: {reading}" for shape, reading in WORLD_READING.items() if shape in model]
    return "".join(rows) + "\nScores: " + "; ".join(extra) + ".\n" + _sentence_note(model, base)


def _part(s: dict[str, Any], value: str, se: str, digits: int) -> str:
    """``+v ± se [se clustered by group]``; a report written before the yardstick clustered (or with one group)
    has no bracket."""
    by_group = s.get(se + "_groups")
    bracket = f" [{by_group:.{digits}f}]" if by_group is not None and math.isfinite(by_group) else ""
    return f"{s[value]:+.{digits}f} ± {s[se]:.{digits}f}{bracket}"


def _sentence_note(model: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]) -> str:
    """A minimal pair scores the attribute's tokens; every word after the group (what a sentence-level benchmark
    scores), read apart, shows the same part under the noise of what each name does to the words around it."""
    m, b = model.get("pairs", {}).get("extra", {}), base.get("pairs", {}).get("extra", {})
    if "sentence_nats_dependent" not in m:
        return ""

    def nats(e: dict[str, float]) -> str:
        return _part(e, "sentence_nats_dependent", "sentence_nats_dependent_se", 3)

    read = nats(m)
    if "sentence_nats_dependent" in b:
        read = f"{nats(b)} -> {read}"
        if b["sentence_nats_dependent"] > 2 * b["sentence_nats_dependent_se"]:
            read += f" ({1 - m['sentence_nats_dependent'] / b['sentence_nats_dependent']:.0%} removed)"
    return (
        f"\nMinimal pairs, every word after the group rather than the attribute's tokens (every axis): "
        f"group-dependent nats {read}. The words around the attribute add what each name does to them, which the "
        "balanced swaps cancel only on average: the same part, read with more than twice the error.\n"
    )
