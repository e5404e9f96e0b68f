"""The world-shaped yardstick's section of an evaluation report: each shape and axis, base beside model, and the
minimal pairs' attribute tokens read apart (scores from ``editor.evaluation.world``)."""

from __future__ import annotations

from typing import Any

WORLD_READING = {
    "contexts": "stereotype over anti-stereotype completion, % (50 = none)",
    "pairs": "the stereotyped group's sentence likelier, % (50 = none)",
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
        "linked to neither attribute (their mean, with several swaps per item); the group-dependent part is their "
        "difference (± one standard error over items). "
        "Nats: the mean log-likelihood difference behind the choice (for questions, how much more the stereotype's "
        "question than a control attribute's points at the stereotyped group's person), whose group-dependent part "
        "is far less noisy.\n\n",
        "| shape | axis | items | base: own / swapped | base: group-dependent | model: own / swapped | "
        "model: group-dependent | group-dependent nats, base -> model | removed |\n",
        "|---|---|---|---|---|---|---|---|---|\n",
    ]
    for key, m in model.items():
        b = base.get(key)

        def pair(s: dict[str, Any] | None) -> str:
            return "—" if s is None else f"{s['own']:.1f} / {s['swapped']:.1f}"

        def dep(s: dict[str, Any] | None) -> str:
            return "—" if s is None else f"{s['dependent']:+.1f} ± {s['dependent_se']:.1f}"

        nats = f"{m['nats_dependent']:+.3f} ± {m['nats_dependent_se']:.3f}"
        removed = "—"
        if b is not None:
            nats = f"{b['nats_dependent']:+.3f} ± {b['nats_dependent_se']:.3f} -> {nats}"
            if b["nats_dependent"] > 2 * b["nats_dependent_se"]:  # a part to remove, outside its noise
                removed = f"{1 - m['nats_dependent'] / b['nats_dependent']:.0%} (nats)"
        label = m["axis"] if m["axis"] != "all" else "**all**"
        rows.append(
            f"| {m['shape']} | {label} | {m['items']} | {pair(b)} | {dep(b)} | {pair(m)} | {dep(m)} | {nats} | {removed} |\n"
        )
    extra = [f"{shape}: {reading}" for shape, reading in WORLD_READING.items() if shape in model]
    return "".join(rows) + "\nScores: " + "; ".join(extra) + ".\n" + _attribute_note(model, base)


def _attribute_note(model: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]) -> str:
    """A minimal pair scores every word after the group; the attribute's own tokens, read apart, show how much of
    its group-dependent part is the stereotype rather than the words around it."""
    m, b = model.get("pairs", {}).get("extra", {}), base.get("pairs", {}).get("extra", {})
    if "attribute_nats_dependent" not in m:
        return ""

    def nats(e: dict[str, float]) -> str:
        return f"{e['attribute_nats_dependent']:+.3f} ± {e['attribute_nats_dependent_se']:.3f}"

    read = nats(m)
    if "attribute_nats_dependent" in b:
        read = f"{nats(b)} -> {read}"
        if b["attribute_nats_dependent"] > 2 * b["attribute_nats_dependent_se"]:
            read += f" ({1 - m['attribute_nats_dependent'] / b['attribute_nats_dependent']:.0%} removed)"
    return (
        f"\nMinimal pairs, the attribute's own tokens alone (every axis): group-dependent nats {read}; the rest of the "
        "pairs' part is the words around the attribute, whose likelihood also depends on the group named.\n"
    )
