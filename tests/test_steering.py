"""Steering building blocks on tiny models and synthetic data."""

from __future__ import annotations

import numpy as np
import torch

from editor.checkpoint import Checkpoint
from editor.hooks import hooked
from editor.seegull import load_seegull, stereotypes
from editor.steering import Activations, elastic_net_budget, labelled_statements, steer2edit_plan, train_probes
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
    acts = Activations(residual, labels, {}, {})
    probes = train_probes(acts)
    assert probes[2].test_accuracy >= 0.95
    assert probes[0].test_accuracy < 0.8
    assert abs(probes[2].direction[0]) > 0.9


def test_statements_from_seegull_are_balanced():
    pairs = [p for p in stereotypes(load_seegull()) if not p.held_out]
    texts, labels = labelled_statements(pairs, 50)
    assert len(texts) == 100 and labels.sum() == 50
    assert all(("not" in t.lower()) == (y == 0) for t, y in zip(texts, labels))


def test_steer2edit_plan_is_valid_and_moves_outputs(tmp_path):
    model = build_model(tiny_configs()["llama"])
    info = Checkpoint.open(save_model(model, tmp_path / "m")).info()
    rng = np.random.default_rng(2)
    L, H, D, F = info.num_layers, info.num_heads, info.head_dim, info.intermediate_size
    acts = Activations(
        np.zeros((2, L, info.hidden_size), dtype=np.float32),
        np.array([0, 1]),
        {c: rng.standard_normal((L, H * D)) + c for c in (0, 1)},
        {c: rng.standard_normal((L, F)) + 0.5 * c for c in (0, 1)},
    )
    vector = rng.standard_normal(info.hidden_size).astype(np.float32)
    edits = steer2edit_plan(acts, info, vector, layer=1, alpha=1.0, max_components=8)
    assert 0 < len(edits) <= 8
    assert all(e.layer <= 1 for e in edits)
    before = logits(model)
    with hooked(model, edits, info):
        after = logits(model)
    assert float((after - before).abs().max()) > 1e-4
    assert torch.isfinite(after).all()
