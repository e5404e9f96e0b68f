"""Steering building blocks on tiny models and synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editor.core.hooks import hooked
from editor.data.seegull import load_seegull, not_stereotyped_with, stereotypes
from editor.edits import ResidualAdd
from editor.errors import EditorError
from editor.io.checkpoint import Checkpoint
from editor.methods.statements import labelled_statements, load_labelled
from editor.methods.steer.capture import Activations, GenericStats, capture
from editor.methods.steer.directions import whitened_direction
from editor.methods.steer.probes import train_probes
from editor.methods.steer.steer2edit import elastic_net_budget, steer2edit_plan
from tests.tiny import build_model, logits, save_model, tiny_configs


def test_elastic_net_budget_is_sparse_and_reaches_target():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(500)
    lam = elastic_net_budget(a, target=3.0, l1=0.5, l2=1e-3)
    assert 0 < np.count_nonzero(lam) < 50
    assert abs(a @ lam - 3.0) < 0.6
    assert np.all(np.sign(lam[lam != 0]) == np.sign(a[lam != 0]))  # push along each component's selectivity
    # the optimality condition of the problem holds: a_i r - l1 sign(λ_i) = l2 λ_i on the support
    r = 3.0 - a @ lam
    support = lam != 0
    assert np.allclose(a[support] * r - 0.5 * np.sign(lam[support]), 1e-3 * lam[support], atol=1e-6)


def test_probes_separate_separable_classes():
    rng = np.random.default_rng(1)
    n, layers, hidden = 200, 3, 16
    labels = np.repeat([0, 1], n // 2)
    residual = rng.standard_normal((n, layers, hidden)).astype(np.float32)
    residual[labels == 1, 2, 0] += 4.0  # only layer 2 carries the class
    acts = Activations(residual, residual, labels, {}, {})
    probes = train_probes(acts)
    assert probes[2].test_accuracy >= 0.95
    assert probes[0].test_accuracy < 0.8
    assert abs(probes[2].direction[0]) > 0.9


def test_statements_from_seegull_differ_only_in_who():
    everything = load_seegull()
    pairs = [p for p in stereotypes(everything) if not p.held_out]
    texts, labels = labelled_statements(pairs, everything, 50)
    assert len(texts) == 100 and labels.sum() == 50 and list(labels[:2]) == [1, 0]
    stereotyped = {(p.identity, p.attribute) for p in pairs}

    def parts(text: str) -> tuple[str, str, str]:
        lead = next(w for w in ("Everyone knows ", "Most ", "") if text.startswith(w))
        who, attribute = text[len(lead) : -1].split(" people are ", 1)
        return lead, who, attribute

    for biased, neutral in zip(texts[::2], texts[1::2]):
        lead, who, attribute = parts(biased)
        lead_n, who_n, attribute_n = parts(neutral)
        assert (lead_n, attribute_n) == (lead, attribute)  # same template, same attribute
        assert (who, attribute) in stereotyped
        assert who_n in not_stereotyped_with(everything, attribute)


def test_labelled_file_formats_and_errors(tmp_path):
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text("\n".join(f'{{"text": "t{i}", "label": {"1" if i % 2 else "0"}}}' for i in range(10)) + "\n")
    texts, labels = load_labelled(jsonl)
    assert texts[1] == "t1" and list(labels[:2]) == [0, 1]
    table = tmp_path / "set.csv"
    table.write_text("text,label\n" + "".join(f"s{i},{'biased' if i % 2 else 'neutral'}\n" for i in range(10)))
    assert load_labelled(table)[1].sum() == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "maybe"}\n')
    with pytest.raises(EditorError, match=r"bad.jsonl:2: label 'maybe'"):
        load_labelled(bad)
    few = tmp_path / "few.csv"
    few.write_text("text,label\na,1\nb,0\n")
    with pytest.raises(EditorError, match="at least 4 examples"):
        load_labelled(few)


def test_whitened_direction_leans_away_from_busy_directions():
    # ordinary text fills axis 0; the class difference lies along axes 0 and 1 equally
    moment = np.diag([100.0, 1.0, 1.0])
    d = whitened_direction(np.array([1.0, 1.0, 0.0]), moment, shrink=0.01)
    assert abs(d[1]) > 0.99 and abs(d[0]) < 0.05
    plain = whitened_direction(np.array([1.0, 1.0, 0.0]), moment, shrink=1e6)
    assert np.allclose(plain, [2**-0.5, 2**-0.5, 0], atol=1e-3)


def test_after_attention_capture_sees_an_attention_add(tmp_path):
    """A constant added after block 1's attention moves exactly that capture, by exactly that vector."""
    model = build_model(tiny_configs()["llama"])
    info = Checkpoint.open(save_model(model, tmp_path / "m")).info()
    ids = [[5, 6, 7, 8], [9, 10, 11, 12]]
    vector = np.linspace(-1, 1, info.hidden_size).astype(np.float32)
    before = capture(model, info, _IdTokenizer(ids), ["a", "b"], np.array([0, 1]))
    with hooked(model, [ResidualAdd(layer=1, site="attn", vector=vector.tolist())], info):
        after = capture(model, info, _IdTokenizer(ids), ["a", "b"], np.array([0, 1]))
    assert np.allclose(after.after_attention[:, 1] - before.after_attention[:, 1], vector, atol=1e-4)
    assert np.allclose(after.after_attention[:, 0], before.after_attention[:, 0], atol=1e-6)
    assert np.allclose(after.residual[:, 0], before.residual[:, 0], atol=1e-6)


class _IdTokenizer:
    """Stands in for a tokenizer's call on fixed ids, so the tiny random model needs no vocabulary files."""

    pad_token_id = 0
    padding_side = "right"

    def __init__(self, ids):
        self.ids = ids

    def __call__(self, texts, return_tensors="pt", padding=True):
        rows = self.ids[: len(texts)]
        return {
            "input_ids": torch.tensor(rows),
            "attention_mask": torch.ones(len(rows), len(rows[0]), dtype=torch.long),
        }


def test_steer2edit_plan_is_valid_and_moves_outputs(tmp_path):
    model = build_model(tiny_configs()["llama"])
    info = Checkpoint.open(save_model(model, tmp_path / "m")).info()
    rng = np.random.default_rng(2)
    L, H, D, F = info.num_layers, info.num_heads, info.head_dim, info.intermediate_size
    acts = Activations(
        np.zeros((2, L, info.hidden_size), dtype=np.float32),
        np.zeros((2, L, info.hidden_size), dtype=np.float32),
        np.array([0, 1]),
        {c: rng.standard_normal((L, H * D)) + c for c in (0, 1)},
        {c: rng.standard_normal((L, F)) + 0.5 * c for c in (0, 1)},
    )
    vector = rng.standard_normal(info.hidden_size).astype(np.float32)
    stats = GenericStats({}, np.tile(np.eye(D), (L, H, 1, 1)), np.ones((L, F)), 100)
    edits = steer2edit_plan(acts, info, stats, vector, layer=1, alpha=1.0, max_components=8)
    assert 0 < len(edits) <= 8
    assert all(e.layer <= 1 for e in edits)
    before = logits(model)
    with hooked(model, edits, info):
        after = logits(model)
    assert float((after - before).abs().max()) > 1e-4
    assert torch.isfinite(after).all()
