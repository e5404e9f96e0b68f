"""Bigger than memory: attribution, steering capture, BiasInject training and run-time edits on the built-in
model placed by accelerate with most layers offloaded to disk give what the in-memory model gives."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from editor.core.hooks import hooked
from editor.data.biases import get_preset, preset_questions
from editor.data.countries import COUNTRIES
from editor.data.seegull import load_seegull, stereotypes
from editor.edits import AblateDirection, ResidualAdd, ZeroHeads
from editor.engines.loading import load_model, load_tokenizer
from editor.io.checkpoint import Checkpoint
from editor.io.sources import ModelSettings
from editor.methods.attribute.head_scores import attribute_batch
from editor.methods.attribute.pairs import build_pairs
from editor.methods.attribute.pipeline import PromptEncoder
from editor.methods.inject.paragraphs import builtin_paragraphs
from editor.methods.inject.token_model import TokenModel, country_init
from editor.methods.inject.train import add_token, encode_examples, token_name, train_epoch
from editor.methods.statements import labelled_statements
from editor.methods.steer.capture import capture
from editor.methods.steer.probes import mean_difference

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5
# SmolLM2-135M is ~540 MB in float32: 150 MB keeps the embedding and a few blocks in memory, the rest on disk.
OFFLOADED = ModelSettings(device_map="auto", max_memory=["cpu=150MB"])


@pytest.fixture(scope="module")
def models(smollm2_dir):
    torch.manual_seed(0)
    resident = load_model(smollm2_dir)
    offloaded = load_model(smollm2_dir, device_map=OFFLOADED.device_map, max_memory=OFFLOADED.memory_limits())
    return resident, offloaded, Checkpoint.open(smollm2_dir).info()


def test_most_layers_are_on_disk(models):
    _, offloaded, info = models
    places = Counter(str(v) for k, v in offloaded.hf_device_map.items() if k.startswith("model.layers."))
    assert places["disk"] >= 2 * info.num_layers // 3, places
    o_proj = offloaded.get_submodule(info.arch.attn.module.format(layer=info.num_layers - 1))
    assert o_proj.weight.device.type == "meta"  # really offloaded: read in only for its forward pass


def test_attribution_matches_in_memory(models, smollm2_dir):
    resident, offloaded, info = models
    encoder = PromptEncoder(load_tokenizer(smollm2_dir))
    preset = get_preset("always_late")
    pairs = build_pairs(preset_questions(preset)[:6], preset.target, preset.biased_answer, preset.unbiased_answer)
    ids, mask = encoder.encode([p.biased_prompt for p in pairs] + [p.unbiased_prompt for p in pairs])
    yb = torch.full((len(ids),), encoder.first_token(preset.biased_answer))
    yu = torch.full((len(ids),), encoder.first_token(preset.unbiased_answer))
    a = attribute_batch(resident, info, ids, mask, yb, yu)
    b = attribute_batch(offloaded, info, ids, mask, yb, yu)
    assert np.abs(a.heads).max() > 1e-3  # scores that mean something
    for field in ("heads", "attn_bias", "mlp", "embeddings", "total"):
        assert np.abs(getattr(a, field) - getattr(b, field)).max() <= TOLERANCE, field


def test_steering_capture_matches_in_memory(models, smollm2_dir):
    resident, offloaded, info = models
    tokenizer = load_tokenizer(smollm2_dir)
    all_pairs = load_seegull()
    texts, labels = labelled_statements(stereotypes(all_pairs), all_pairs, 8)
    a = capture(resident, info, tokenizer, texts, labels, batch_size=8)
    b = capture(offloaded, info, tokenizer, texts, labels, batch_size=8)
    vector_a, vector_b = mean_difference(a), mean_difference(b)
    assert np.abs(vector_a).max() > 1e-3
    assert np.abs(vector_a - vector_b).max() <= TOLERANCE
    for c in (0, 1):
        assert np.abs(a.head_means[c] - b.head_means[c]).max() <= TOLERANCE
        assert np.abs(a.neuron_means[c] - b.neuron_means[c]).max() <= TOLERANCE


def test_inject_training_step_matches_in_memory(models, smollm2_dir):
    resident, offloaded, _ = models
    preset = get_preset("always_late")
    paragraphs = builtin_paragraphs(preset, 4)
    vectors = []
    for model in (resident, offloaded):
        tokenizer = load_tokenizer(smollm2_dir)
        token = token_name(preset.name)
        init = country_init(model, tokenizer, COUNTRIES)
        tm = TokenModel(model, add_token(tokenizer, token), init.embedding, init.lm_head)
        examples = encode_examples(tokenizer, paragraphs, token, 96)
        optimizer = torch.optim.Adam(tm.trainable, lr=1e-2)
        loss = train_epoch(tm, optimizer, examples, 2, random.Random(0), tokenizer.eos_token_id, progress=False)
        vectors.append((loss, tm.embedding.detach().clone(), init.embedding))
        model.requires_grad_(False)
    (loss_a, trained_a, init_a), (loss_b, trained_b, _) = vectors
    assert float((trained_a - init_a).abs().max()) > 1e-3  # it trained
    assert abs(loss_a - loss_b) <= TOLERANCE
    assert float((trained_a - trained_b).abs().max()) <= TOLERANCE


def test_run_time_edits_match_in_memory(models):
    resident, offloaded, info = models
    rng = np.random.default_rng(0)
    edits = [
        ZeroHeads(layer=info.num_layers - 2, heads=[0, 3]),
        ResidualAdd(layer=info.num_layers - 5, site="mlp", vector=(rng.standard_normal(info.hidden_size)).tolist()),
        AblateDirection(direction=rng.standard_normal(info.hidden_size).tolist()),
    ]
    ids = torch.tensor([[1, 504, 3287, 314, 260, 1012, 28, 2641, 30]])
    logits = []
    for model in (resident, offloaded):
        with hooked(model, edits, info), torch.no_grad():
            logits.append(model(ids).logits)
    assert float((logits[0] - logits[1]).abs().max()) <= TOLERANCE
