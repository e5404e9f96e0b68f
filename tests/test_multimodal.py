"""Multimodal wrappers (Gemma-3 conditional generation, LLaVA): only the language model is edited; the vision
tower and projector come out byte for byte; the export loads with the family's own Auto class; a wrapper around
a language model the entry does not describe is refused in one line. Hook = bake for every edit kind is in
test_hook_equals_bake (the wrappers are cases there)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from editor.core.plan import Plan
from editor.edits import AblateDirection, RankOne, ResidualAdd, ZeroHeads
from editor.io.checkpoint import Checkpoint
from editor.pipeline.export import export_checkpoint
from tests.test_cli_errors import wedit

LANGUAGE = ("language_model.", "model.language_model.", "lm_head.")


def _tensors(folder) -> dict[str, bytes]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, "np") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                out[name] = f.get_tensor(name).tobytes()
    return out


def _plan(info) -> list:
    h = info.hidden_size
    edits = [
        ZeroHeads(layer=1, heads=[0, 2]),
        RankOne(layer=2, site="mlp", u=[0.1] * h, v=[0.05] * info.intermediate_size, scale=0.5),
        RankOne(layer=0, site="attn", head=1, u=[0.2] * h, v=[0.3] * info.head_dim),
    ]
    if not info.arch.attn.output_norm:  # Gemma-3 normalises block outputs: no residual adds, no ablation
        edits += [
            ResidualAdd(layer=1, site="attn", vector=[0.5] * h),
            AblateDirection(direction=[1.0] + [0.0] * (h - 1)),
        ]
    return edits


@pytest.mark.parametrize("case", ["gemma3", "llava"])
def test_only_the_language_model_changes(case, tiny_checkpoint, tmp_path):
    base = tiny_checkpoint(case)
    info = Checkpoint.open(base).info()
    out = tmp_path / "export"
    export_checkpoint(base, Plan(edits=_plan(info)), out, progress=False)
    before, after = _tensors(base), _tensors(out)
    outside = [n for n in before if not n.startswith(LANGUAGE)]
    assert any(n.startswith("vision_tower.") for n in outside) and any("projector" in n for n in outside)
    assert all(after[n] == before[n] for n in outside), "a vision tower or projector tensor changed"
    assert set(after) - set(before) <= {n for n in after if n.startswith(LANGUAGE)}, "a tensor outside was added"
    changed = [n for n in before if after[n] != before[n]]
    assert changed and all(n.startswith(LANGUAGE) for n in changed)
    config, old = json.loads((out / "config.json").read_text()), json.loads((base / "config.json").read_text())
    assert config["vision_config"] == old["vision_config"] and config["model_type"] == case
    if case == "llava":  # the residual add's bias key belongs to the language model's section
        assert config["text_config"]["attention_bias"] is True and "attention_bias" not in config


def test_a_wrapper_around_another_language_model_is_refused_in_one_line(tiny_checkpoint, tmp_path):
    import shutil

    base = tmp_path / "llava"
    shutil.copytree(tiny_checkpoint("llava"), base)
    config = json.loads((base / "config.json").read_text())
    config["text_config"]["model_type"] = "mistral"
    (base / "config.json").write_text(json.dumps(config))
    (tmp_path / "plan.json").write_text(json.dumps([{"kind": "zero_heads", "layer": 0, "heads": [1]}]))
    result = wedit("export", "--model", str(base), "--plan", str(tmp_path / "plan.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "text_config.model_type is 'mistral'" in result.stderr
    assert str(base / "config.json") in result.stderr and not (tmp_path / "o").exists()


def test_archs_lists_the_wrappers():
    result = wedit("archs")
    assert result.returncode == 0
    assert "gemma3" in result.stdout and "llava" in result.stdout
