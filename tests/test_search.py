"""The honest yardstick (split by identity and attribute, own sentence frames) and `wedit search`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from editor.data.frames import FRAMES, frame_items
from editor.data.seegull import load_seegull, stereotypes
from editor.data.splits import FOLDS, fold_of, split_pairs
from editor.evaluation.heldout import FoldScores, Measured
from editor.methods.fit.erasure import ErasureFit, erase_start_layer
from editor.methods.fit.unlink import UnlinkFit
from editor.methods.search.methods import REGISTRY
from editor.methods.search.methods.ablate_identity import AblateIdentitySearch, AblateIdentitySettings, IdentityInputs
from editor.methods.search.methods.erase_identity import EraseIdentitySearch
from editor.methods.search.methods.selective_add import opposite_sign_layers
from editor.methods.search.methods.unlink_mlp import UnlinkMlpSearch
from editor.methods.search.report import SearchReport, TrialResult, method_table
from editor.methods.search.run import best_per_method, choose, remaining_bias
from editor.methods.search.settings import SearchSettings, search_settings_type
from editor.methods.statements import CONTRAST_FRAMES, contrast_statements, statements_for
from editor.methods.steer.capture import Activations
from editor.methods.steer.identity import identity_subspace
from editor.methods.steer.probes import mean_difference, site_stream
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
    for contrast in ("frames", "frames_identity", "templates", "negation"):
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
        return _trial(n, "heads", bias, damage, feasible)

    trials = [
        trial(0, 0.3, 0.05, False),
        trial(1, 0.5, 0.01, True),
        trial(2, 0.5, 0.005, True),
        trial(3, 0.97, 0, True),
    ]
    assert choose(trials).number == 2
    assert choose([trial(0, 0.97, 0.0, True), trial(1, 0.1, 0.1, False)]) is None


def _trial(number: int, method: str, bias: float, damage: float, feasible: bool) -> TrialResult:
    return TrialResult(
        number=number,
        params={"method": method},
        label=f"{method} #{number}",
        bias=bias,
        damage=damage,
        gap=0.0,
        frame_nats=0.0,
        preference=0.5,
        lm_score=0.8,
        perplexity=10.0,
        kl=0.01,
        edits=1,
        feasible=feasible,
    )


def test_each_method_is_reported_by_its_best_trial_inside_the_budget():
    trial = _trial
    trials = [
        trial(0, "heads", 0.4, 0.05, False),
        trial(1, "heads", 0.8, 0.01, True),
        trial(2, "ablate_identity", 0.6, 0.01, True),
        trial(3, "ablate_identity", 0.6, 0.0, True),
        trial(4, "steer2edit", 0.2, 0.3, False),
    ]
    best = best_per_method(trials)
    assert {m: t.number for m, t in best.items()} == {"heads": 1, "ablate_identity": 3}

    def measured(gap: float, ppl: float) -> Measured:
        folds = {f: FoldScores(f, gap, 10, 0.5, 0.0, 0.7, 10) for f in ("build", "test")}
        return Measured(folds, ppl, 0.01, 0.5)

    report = SearchReport(_scores(0.4, 0.2), 20.0, trials=trials, base=measured(0.4, 20.0))
    report.per_method = {"heads": (1, measured(0.3, 20.2)), "ablate_identity": (3, measured(0.1, 21.0))}
    table = method_table(report)
    assert table[0].startswith("each method") and table[4].startswith("| base |")
    # Rows go from the lowest held-out gap: the ablation (-75%) before the heads (-25%).
    assert table[5].startswith("| ablate_identity #3 (trial 3) | +0.100 (-75%)") and "21.00 (+5.0%)" in table[5]
    assert table[6].startswith("| heads #1 (trial 1) | +0.300 (-25%)")


def test_identity_subspace_leans_away_from_what_ordinary_text_fills():
    rng = np.random.default_rng(0)
    hidden = 12
    # Groups spread most along axis 0, a little along axis 1; ordinary text is loud on axis 0 only.
    points = rng.normal(size=(40, hidden)) * np.array([5.0, 2.0] + [0.1] * (hidden - 2))
    covariance = points.T @ points / len(points)
    quiet = np.eye(hidden)
    loud = np.diag([400.0] + [1.0] * (hidden - 1))
    plain = identity_subspace(covariance, quiet, 1, 0.01)[0]
    whitened = identity_subspace(covariance, loud, 1, 0.01)[0]
    assert abs(plain[0]) > 0.99 and abs(whitened[1]) > 0.99
    basis = identity_subspace(covariance, loud, 3, 0.1)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-5)
    # Much ridge: the plain principal directions of the groups come back.
    np.testing.assert_allclose(np.abs(identity_subspace(covariance, loud, 1, 1e6)[0]), np.abs(plain), atol=1e-3)


def test_identity_ablation_reads_its_writers_and_old_plans_keep_their_bytes():
    import optuna

    from editor.edits import AblateDirection

    hidden = 6
    state = IdentityInputs(
        layers=[3], covariances={3: np.diag([5.0, 3.0, 1.0, 0.1, 0.1, 0.1])}, moments={3: np.eye(hidden)}
    )
    method = AblateIdentitySearch(AblateIdentitySettings())
    params = {"layer": 3, "identity_k": 2, "ridge": 0.01, "ablation_strength": 0.5}
    attn = method.suggest(optuna.trial.FixedTrial({**params, "identity_writers": "attn"}), state)
    every = method.suggest(optuna.trial.FixedTrial({**params, "identity_writers": "all"}), state)
    assert [(e.sites, e.embedding, e.strength) for e in attn] == [(["attn"], False, 0.5)] * 2
    assert [(e.sites, e.embedding) for e in every] == [(None, True)] * 2
    assert method.describe({**params, "identity_writers": "attn"}) == [
        "L3",
        "k=2",
        "attention writes",
        "ridge=0.01",
        "s=0.5",
    ]
    # Without sites the JSON is what it was before the field existed; with them it round-trips.
    assert "sites" not in every[0].model_dump() and attn[0].model_dump()["sites"] == ["attn"]
    assert AblateDirection.model_validate(attn[0].model_dump()) == attn[0]
    assert "attn outputs" in attn[0].describe()


def test_the_search_starts_from_the_known_good_identity_ablation():
    from types import SimpleNamespace

    def context(layers, num_layers):
        return SimpleNamespace(layers=layers, info=SimpleNamespace(num_layers=num_layers))

    (point,) = AblateIdentitySearch(AblateIdentitySettings()).seeds(context(list(range(9, 28)), 30))
    assert (point["layer"], point["identity_k"], point["identity_writers"]) == (23, 3, "attn")
    (two,) = AblateIdentitySearch(AblateIdentitySettings(k_max=2)).seeds(context([4, 5], 8))
    assert two == {**point, "layer": 5, "identity_k": 2}
    assert EraseIdentitySearch().seeds(context([3], 8)) == [{"erase_scale": 1.0}]
    assert UnlinkMlpSearch().seeds(context([3], 8)) == [{"unlink_scale": 1.0}]
    assert REGISTRY["residual_add"]().seeds(context([23], 30)) == [] and REGISTRY["heads"]().seeds(None) == []


def test_erase_identity_trials_scale_the_fitted_shares():
    import optuna

    directions = np.eye(6, dtype=np.float32)[:2]
    fit = ErasureFit(directions, np.array([0.5, 0.8], dtype=np.float32), [1.0])
    method = EraseIdentitySearch()
    edits = method.suggest(optuna.trial.FixedTrial({"erase_scale": 1.5}), fit)
    assert [(e.strength, e.sites, e.embedding) for e in edits] == [(0.75, None, True), (1.0, None, True)]
    assert [e.direction for e in edits] == directions.tolist()
    assert method.describe({"method": "erase_identity", "erase_scale": 1.5}) == ["x=1.5"]
    # The fit starts where it was measured: layer 25 of 30, or the searched layer nearest that depth.
    assert erase_start_layer(list(range(9, 28)), 30) == 25 and erase_start_layer([4, 5], 8) == 5


def test_unlink_mlp_is_searched_only_when_named_and_its_trials_scale_the_fitted_updates():
    import optuna

    assert "unlink_mlp" not in SearchSettings().methods
    assert SearchSettings(methods=["unlink_mlp"]).unlink_mlp.steps == 100
    fit = UnlinkFit([3, 5], np.ones((2, 1, 6), np.float32), np.ones((2, 1, 4), np.float32), [1.0], ["mlp", "mlp"])
    edits = UnlinkMlpSearch().suggest(optuna.trial.FixedTrial({"unlink_scale": 1.5}), fit)
    assert [(e.kind, e.layer, e.site, e.scale) for e in edits] == [
        ("rank_one", 3, "mlp", 1.5),
        ("rank_one", 5, "mlp", 1.5),
    ]


def test_a_method_is_one_registry_entry_its_section_and_flags_follow():
    """Every registered method has a place among the choices; each settings type is a section of its own."""
    assert list(SearchSettings.model_fields["methods"].annotation.__args__[0].__args__) == list(REGISTRY)
    for name, method in REGISTRY.items():
        assert method.name == name and method.summary
        if method.settings_type is not None:
            assert SearchSettings.model_fields[name].annotation is method.settings_type
    settings = SearchSettings.model_validate({"unlink_mlp": {"steps": 3}, "heads": {"k_max": 2}})
    assert settings.unlink_mlp.steps == 3 and settings.heads.k_max == 2 and settings.erase_identity.steps == 40


@pytest.mark.parametrize(
    ("old", "new"), [("unlink_steps", "unlink_mlp.steps"), ("k_max", "heads.k_max"), ("erase_k", "erase_identity.k")]
)
def test_a_key_that_moved_into_a_method_section_says_where(old, new):
    with pytest.raises(ValueError, match=f"'{old}' moved to the method's own section: write {new}"):
        SearchSettings.model_validate({old: 3})


def _acts(biased: np.ndarray, neutral: np.ndarray) -> Activations:
    """Two examples per class; after attention is half the stream, so the MLP adds the other half."""
    residual = np.stack([biased, biased, neutral, neutral]).astype(np.float32)
    return Activations(residual, residual / 2, np.array([1, 1, 0, 0]), {}, {})


def test_sites_and_selective_layers():
    # layer 0: the classes sit either side of the origin along their difference; layer 1: both far on one side.
    biased = np.array([[1.0, 0.0], [11.0, 0.0]])
    neutral = np.array([[-1.0, 0.0], [9.0, 0.0]])
    acts = _acts(biased, neutral)
    np.testing.assert_allclose(mean_difference(acts), [[2.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(mean_difference(acts, site="mlp"), mean_difference(acts) / 2)
    np.testing.assert_allclose(site_stream(acts, "attn"), acts.residual / 2)
    assert opposite_sign_layers(acts, "block", [0, 1]) == [0]
    assert opposite_sign_layers(acts, "block", [1]) == []
    with pytest.raises(ValueError, match="site 'post'"):
        site_stream(acts, "post")


def test_the_data_contrast_needs_its_file(tmp_path):
    with pytest.raises(ValueError, match="'data' contrast reads the file"):
        SearchSettings(contrasts=["frames", "data"])
    path = tmp_path / "set.jsonl"
    rows = [{"text": f"Sentence {i} about people.", "label": i % 2} for i in range(10)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    texts, labels = statements_for("data", [], None, 10, data=path)  # a file needs neither model nor fold
    assert texts == [r["text"] for r in rows] and labels.tolist() == [r["label"] for r in rows]


@pytest.mark.slow
def test_search_on_smollm2_writes_every_trial_and_a_verifiable_choice(tmp_path, smollm2_dir):
    out = tmp_path / "search"
    small = {
        "--trials": "5",
        "--statements": "24",
        "--heads-pairs": "16",
        "--select-pairs": "12",
        "--select-items": "16",
        "--test-pairs": "16",
        "--test-items": "16",
        "--wiki-tokens": "256",
        "--generic-tokens": "512",
        "--report-tokens": "256",
        "--layers": "18,22",
        "--erase-identity-steps": "2",
        "--methods": ",".join(REGISTRY),  # the opt-in fit too, through the command line
        "--unlink-mlp-steps": "2",
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
        "selective_add": {"residual_add"},
        "ablate_direction": {"ablate_direction"},
        "ablate_identity": {"ablate_direction"},
        "erase_identity": {"ablate_direction"},
        "unlink_mlp": {"rank_one"},
        "steer2edit": {"rank_one"},
        "heads": {"zero_heads", "mean_heads", "scale_heads"},
        "heads+residual_add": {"zero_heads", "mean_heads", "scale_heads", "residual_add"},
    }[method]
    assert kinds and kinds <= expected, (method, kinds)
    assert np.isfinite(data["export"]["perplexity"]) and 0 <= data["export"]["retention"] <= 1


TINY = {
    "trials": 4,
    "statements": 10,
    "select_pairs": 5,
    "select_items": 8,
    "test_pairs": 5,
    "test_items": 8,
    "wiki_tokens": 64,
    "generic_tokens": 128,
    "report_tokens": 64,
    "contrasts": ["templates", "frames"],
    "layers": [1, 2],
    "damage_budget": 10.0,
    "kl_budget": 10.0,
}

TOY = '''"""toy: a fixed random vector added at the last searched block."""

import numpy as np
from pydantic import Field

from editor.core.settings import Settings
from editor.edits import ResidualAdd
from editor.methods.search.methods.base import SearchMethod


class ToySettings(Settings):
    size: float = Field(0.5, gt=0, description="largest strength a trial tries")


class ToySearch(SearchMethod):
    name = "toy"
    summary = "a fixed random vector added at the last searched block"
    settings_type = ToySettings

    def prepare(self, context):
        return context.layers[-1], np.random.default_rng(0).standard_normal(context.info.hidden_size)

    def suggest(self, trial, state):
        layer, vector = state
        strength = trial.suggest_float("toy_strength", 0.01, self.settings.size)
        return [ResidualAdd(layer=layer, site="mlp", vector=vector.tolist(), scale=strength)]

    def seeds(self, context):
        return [{"toy_strength": 0.01}]
'''


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint

    path = tiny_checkpoint("llama", tokenizer=True)
    return load_model(path), load_tokenizer(path), Checkpoint.open(path).info()


def test_adding_a_method_is_one_file_and_one_registry_entry(tiny_model, tmp_path, monkeypatch):
    import argparse

    from editor.core.settings import add_flags
    from editor.methods.search.run import run_search

    (tmp_path / "toy_method.py").write_text(TOY)  # the one file
    monkeypatch.syspath_prepend(str(tmp_path))
    from toy_method import ToySearch

    monkeypatch.setitem(REGISTRY, "toy", ToySearch)  # the one registry entry
    settings_type = search_settings_type()
    parser = argparse.ArgumentParser()
    add_flags(parser, settings_type)
    assert "--toy-size" in parser.format_help()  # its section's flags follow from the registry
    settings = settings_type.model_validate({**TINY, "methods": ["toy"], "toy": {"size": 0.2}})
    (tmp_path / "out").mkdir()
    report = run_search(*tiny_model, tmp_path / "out", settings, progress=False)
    assert [t.params["method"] for t in report.trials] == ["toy"] * 4 and report.trials[0].params[
        "toy_strength"
    ] == 0.01
    assert all(0.01 <= t.params["toy_strength"] <= 0.2 and t.label == "toy" and t.edits == 1 for t in report.trials)
    saved = json.loads((tmp_path / "out" / "search.json").read_text())
    assert saved["settings"]["toy"] == {"size": 0.2}


def test_a_search_of_every_registered_method_runs_end_to_end(tiny_model, tmp_path):
    """The driver on a tiny model: every method prepared (two fits of two steps), one trial each at least, the
    choice and its plan replayed from the recorded parameters."""
    from editor.core.plan import load_plan
    from editor.methods.search.run import run_search

    settings = SearchSettings.model_validate(
        {
            **TINY,
            "trials": len(REGISTRY) + 3,
            "methods": list(REGISTRY),
            "erase_identity": {"steps": 2, "k": 2},
            "unlink_mlp": {"steps": 2},
            "heads": {"pairs": 8, "k_max": 3},
        }
    )
    report = run_search(*tiny_model, tmp_path, settings, progress=False)
    assert len(report.trials) == len(REGISTRY) + 3
    seeded = [t.params["method"] for t in report.trials[:3]]
    assert seeded == ["ablate_identity", "erase_identity", "unlink_mlp"]  # the seeds, in the registry's order
    assert all(t.label.startswith(t.params["method"]) for t in report.trials)
    data = json.loads((tmp_path / "search.json").read_text())
    assert len(data["trials"]) == len(report.trials) and (tmp_path / "pareto.png").stat().st_size > 10_000
    if report.chosen is not None:
        assert len(load_plan(tmp_path / "plan.json").edits) == report.chosen.edits
        assert set(data["export"]["folds"]) == {"build", "test"}


def test_a_search_on_a_family_that_refuses_some_methods_leaves_their_trials_out_and_says_why(tiny_checkpoint, tmp_path):
    """Mixtral holds no bias, so residual adds are refused: those trials are left out of the study with the
    bake's reason in the report, and the other methods (heads, ablations through every expert) are searched."""
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint
    from editor.methods.search.report import summary_lines
    from editor.methods.search.run import run_search

    path = tiny_checkpoint("mixtral", tokenizer=True)
    model, tokenizer, info = load_model(path), load_tokenizer(path), Checkpoint.open(path).info()
    methods = [m for m in REGISTRY if m != "unlink_mlp"]  # a dense-MLP fit: refused outright (tests/test_moe.py)
    settings = SearchSettings.model_validate(
        {**TINY, "trials": 10, "methods": methods, "erase_identity": {"steps": 2, "k": 2}, "heads": {"pairs": 8}}
    )
    report = run_search(model, tokenizer, info, tmp_path, settings, progress=False)
    assert "residual_add" in report.refused and "cannot carry a bias" in report.refused["residual_add"]
    assert report.trials and not any(t.params["method"] in report.refused for t in report.trials)
    assert any("trials refused by this architecture" in line for line in summary_lines(report))
    assert json.loads((tmp_path / "search.json").read_text())["trials"]
