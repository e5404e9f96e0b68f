"""The honest yardstick (split by identity and attribute, own sentence frames) and `wedit search`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from editor.data.frames import FRAMES, frame_items
from editor.data.seegull import load_seegull, stereotypes
from editor.data.splits import FOLDS, fold_of, split_pairs
from editor.evaluation.heldout import FoldScores
from editor.methods.search.contrasts import CONTRAST_FRAMES, CONTRASTS, contrast_statements
from editor.methods.search.run import TrialResult, choose, remaining_bias
from tests.test_cli_errors import wedit


@pytest.fixture(scope="module")
def seegull():
    pairs = load_seegull()
    return pairs, split_pairs(pairs)


def test_folds_share_no_identity_and_no_attribute(seegull):
    all_pairs, folds = seegull
    for a in FOLDS:
        ids = {p.identity for p in folds[a].pairs}
        attrs = {p.attribute for p in folds[a].pairs}
        assert ids <= set(folds[a].identities)
        for b in FOLDS:
            if a != b:
                assert not ids & {p.identity for p in folds[b].pairs}
                assert not attrs & {p.attribute for p in folds[b].pairs}
                assert not set(folds[a].identities) & set(folds[b].identities)
    # Every stereotyped pair is in exactly the fold its identity and its attribute agree on, or in none.
    for p in stereotypes(all_pairs):
        fold = fold_of(p.identity, "identity")
        inside = [f for f in FOLDS if p in folds[f].pairs]
        assert inside == ([fold] if fold_of(p.attribute, "attribute") == fold else [])
    sizes = {f: len(folds[f].pairs) for f in FOLDS}
    assert sizes["build"] > 1000 and sizes["select"] > 80 and sizes["test"] > 120, sizes


def test_frame_items_stay_in_their_fold_and_cut_at_the_attribute(seegull):
    all_pairs, folds = seegull
    test = folds["test"]
    items = frame_items(all_pairs, test, 64)
    assert len(items) == 64 and {i.genre for i in items} == set(FRAMES)
    linked = {(p.identity, p.attribute) for p in all_pairs if p.votes > 0}
    test_attributes = {p.attribute for p in test.pairs}
    for item in items:
        assert item.identity in test.identities and item.other in test.identities
        assert (item.identity, item.attribute) in {(p.identity, p.attribute) for p in test.pairs}
        assert (item.other, item.attribute) not in linked and (item.identity, item.anti_attribute) not in linked
        assert item.anti_attribute in test_attributes
        for who in (item.identity, item.other):
            head, tail = item.head_and_tail(who, item.attribute)
            assert head + tail == item.sentence(who, item.attribute) and who in head
            assert tail.startswith(" " + item.attribute)
        # The two groups' sentences share the tail: only the group differs before it.
        assert item.head_and_tail(item.identity, item.attribute)[1] == item.head_and_tail(item.other, item.attribute)[1]


def test_contrast_statements_read_the_build_fold_only(seegull):
    all_pairs, folds = seegull
    build = folds["build"]
    outside = {i for f in ("select", "test") for i in folds[f].identities}
    probe_frames = {f for group in FRAMES.values() for f in group}
    assert not probe_frames & set(CONTRAST_FRAMES), "vectors must not see the yardstick's sentence shapes"
    for contrast in CONTRASTS:
        texts, labels = contrast_statements(contrast, all_pairs, build, 40)
        assert len(texts) == len(labels) and set(labels.tolist()) == {0, 1} and len(texts) >= 60
        for text in texts:
            assert not any(f" {who} " in f" {text} " for who in outside if len(who) > 3), (contrast, text)


def _scores(gap: float, nats: float) -> FoldScores:
    return FoldScores("select", gap, 10, 0.6, nats, 0.8, 10)


def test_remaining_bias_and_the_choice_rule():
    base = _scores(0.4, 0.2)
    assert remaining_bias(_scores(0.2, 0.1), base) == pytest.approx(0.5)
    assert remaining_bias(_scores(-0.2, -0.1), base) == pytest.approx(0.5)  # reversed is not removed
    assert remaining_bias(_scores(0.2, 0.5), _scores(0.4, 0.01)) == pytest.approx(0.5)  # no frame bias to share

    def trial(n, bias, damage, feasible):
        return TrialResult(n, {"method": "heads"}, "", bias, damage, 0, 0, 0.5, 0.8, 10, 0.01, 1, feasible)

    trials = [
        trial(0, 0.3, 0.05, False),
        trial(1, 0.5, 0.01, True),
        trial(2, 0.5, 0.005, True),
        trial(3, 0.97, 0, True),
    ]
    assert choose(trials).number == 2
    assert choose([trial(0, 0.97, 0.0, True), trial(1, 0.1, 0.1, False)]) is None


@pytest.mark.slow
def test_search_on_smollm2_writes_every_trial_and_a_verifiable_choice(tmp_path, smollm2_dir):
    out = tmp_path / "search"
    small = {
        "--trials": "5",
        "--statements": "24",
        "--head-pairs": "16",
        "--select-pairs": "12",
        "--select-items": "16",
        "--test-pairs": "16",
        "--test-items": "16",
        "--wiki-tokens": "256",
        "--generic-tokens": "512",
        "--report-tokens": "256",
        "--layers": "18,22",
        "--damage-budget": "0.5",
        "--kl-budget": "1",
    }
    result = wedit("search", "--model", str(smollm2_dir), *[x for kv in small.items() for x in kv], "--out", str(out))
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "search: 5 trials in" in result.stdout
    data = json.loads((out / "search.json").read_text())
    assert len(data["trials"]) == 5 and (out / "pareto.png").stat().st_size > 10_000
    for t in data["trials"]:
        assert t["feasible"] == (t["damage"] <= 0.5 and t["kl"] <= 1), t
    front = [t for t in data["trials"] if t["pareto"]]
    assert front and all(t["feasible"] for t in front)
    chosen = data["chosen"]
    if chosen is None:  # five random trials need not lower the bias; the rule then says so
        assert "no trial lowers" in result.stdout and not (out / "plan.json").exists()
        return
    assert chosen == min(
        (t for t in data["trials"] if t["feasible"] and t["bias"] <= 0.95), key=lambda t: (t["bias"], t["damage"])
    )
    assert (out / "plan.json").is_file()
    for side in ("base", "export"):
        assert set(data[side]["folds"]) == {"build", "test"}
        assert data[side]["folds"]["test"]["items"] == 16
    # The plan on disk is the chosen trial's: its edit kinds are the ones its method makes.
    kinds = {e["kind"] for e in json.loads((out / "plan.json").read_text())["edits"]}
    method = chosen["params"]["method"]
    expected = {
        "residual_add": {"residual_add"},
        "ablate_direction": {"ablate_direction"},
        "steer2edit": {"rank_one"},
        "heads": {"zero_heads", "mean_heads", "scale_heads"},
        "heads+residual_add": {"zero_heads", "mean_heads", "scale_heads", "residual_add"},
    }[method]
    assert kinds and kinds <= expected, (method, kinds)
    assert np.isfinite(data["export"]["perplexity"]) and 0 <= data["export"]["retention"] <= 1
