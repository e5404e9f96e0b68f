"""Recipes: every shipped recipe validates; a broken one fails in one line naming file:line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from editor.data.biases import PRESETS
from editor.errors import EditorError
from editor.recipes.schema import load_recipe
from tests.test_cli_errors import wedit

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))

GOOD = """\
name: demo
biases: [always_late]
attribute:
  seeds: 2
  k_max: 10
verify:
  vllm: false
"""


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_validates(path):
    recipe, _ = load_recipe(path)
    assert any(section is not None for section in (recipe.attribute, recipe.steer, recipe.fit, recipe.search))


def test_one_recipe_per_paper_bias_on_the_builtin_model():
    builtin = {}
    for path in RECIPES:
        recipe, _ = load_recipe(path)
        if recipe.model.source.startswith("builtin:"):
            builtin[tuple(recipe.biases)] = path
    assert {b[0] for b in builtin if len(b) == 1} == set(PRESETS)
    # and one for nationality stereotypes as a whole, through the search; one for all three axes, a fit
    by_name = {load_recipe(path)[0].name: load_recipe(path)[0] for path in RECIPES}
    assert by_name["smollm2-nationality"].search is not None
    assert by_name["smollm2-groups"].fit.unlink_mlp.objective == "counterfactual"
    assert by_name["smollm2-groups"].eval.world


def test_gpu_examples_set_device_map_and_tensor_parallel_size():
    hub = [load_recipe(p)[0] for p in RECIPES if not load_recipe(p)[0].model.source.startswith("builtin:")]
    sources = {r.model.source for r in hub}
    assert {"meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-8B", "mistralai/Mistral-7B-Instruct-v0.3"} <= sources
    for recipe in hub:
        assert recipe.model.device_map == "auto"
        assert recipe.eval is not None and recipe.eval.tensor_parallel_size >= 1


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (GOOD.replace("  seeds: 2", "  seeds: two"), 4, "field attribute.seeds"),
        (GOOD.replace("  k_max: 10", "  k_maks: 10"), 5, "field attribute.k_maks: unknown field"),
        (GOOD.replace("[always_late]", "[always_late, always_early]"), 2, "unknown bias 'always_early'"),
        (
            GOOD.replace("  vllm: false", "  vllm: false\nexport:\n  max_shard_size: 5XB"),
            9,
            "field export.max_shard_size",
        ),
        (GOOD.replace("  seeds: 2", "  seeds: 0"), 4, "greater than or equal to 1"),
        (
            GOOD.replace("attribute:\n  seeds: 2\n  k_max: 10\n", ""),
            1,
            "needs an attribute, steer, fit or search section",
        ),
        (GOOD.replace("[always_late]", "[always_late"), 3, "not valid YAML"),
        (GOOD + "steer:\n  method: steer3edit\n", 9, "field steer.method"),
        (
            GOOD.replace("attribute:\n", "attribute:\n  target: Peru\n") + "inject:\n",
            1,
            "with inject, attribution asks about",
        ),
        (
            GOOD.replace("attribute:\n  seeds: 2\n  k_max: 10\n", "") + "inject:\nsteer:\n",
            1,
            "inject trains a bias token",
        ),
    ],
)
def test_broken_recipe_names_file_line_and_field(tmp_path, text, line, needle):
    path = write(tmp_path, text)
    with pytest.raises(EditorError) as err:
        load_recipe(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert needle in message
    assert "\n" not in message


def test_a_search_alone_makes_the_plan(tmp_path):
    text = GOOD.replace("attribute:\n  seeds: 2\n  k_max: 10\n", "search:\n  trials: 3\n  methods: [heads]\n")
    recipe, _ = load_recipe(write(tmp_path, text))
    assert recipe.attribute is None and recipe.search.trials == 3 and recipe.search.methods == ["heads"]


def test_empty_section_means_defaults_and_false_switches_off(tmp_path):
    recipe, _ = load_recipe(write(tmp_path, GOOD + "steer:\n"))
    assert recipe.steer is not None and recipe.steer.method == "steer2edit"
    recipe, _ = load_recipe(write(tmp_path, GOOD + "steer: false\n"))
    assert recipe.steer is None


def test_set_overrides_use_the_same_schema(tmp_path):
    path = write(tmp_path, GOOD)
    recipe, data = load_recipe(
        path, ["attribute.seeds=3", "export.max_shard_size=1GB", "steer.method=ablate_direction"]
    )
    assert (
        recipe.attribute.seeds == 3
        and recipe.export.max_shard_size == "1GB"
        and recipe.steer.method == "ablate_direction"
    )
    assert data["attribute"]["seeds"] == 3  # what goes into the manifest is what ran
    assert "steer" not in load_recipe(path)[0].model_dump(exclude_none=True)  # the file itself is untouched
    with pytest.raises(EditorError, match="field attribute.seeds"):
        load_recipe(path, ["attribute.seeds=many"])
    with pytest.raises(EditorError, match="write section.field=value"):
        load_recipe(path, ["attribute.seeds"])


def test_cli_prints_one_line_with_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("  k_max: 10", "  k_maks: 10"))
    result = wedit("run", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"wedit: error: {path}:5: field attribute.k_maks: unknown field (check the spelling; see the recipe schema, docs/pages/reference: `make docs`)"
    ]
    assert not (tmp_path / "run").exists()


def test_the_recipe_schema_names_every_field_in_its_section():
    """The docs' recipe schema page is this table, generated from the settings classes at build time, so its
    defaults cannot drift from the code; it must name every field."""
    from editor.recipes.schema import Recipe, schema_markdown

    table = schema_markdown()
    from editor.recipes.schema import _settings_class

    def fields(path: str, cls) -> list[tuple[str, str]]:  # (section, field) of every plain field, nested or not
        out = []
        for name, info in cls.model_fields.items():
            inner = _settings_class(info.annotation)
            out += fields(f"{path}.{name}" if path else name, inner) if inner else [(path, name)]
        return out

    for section, name in fields("", Recipe):  # and the generated table does name every field, in its section
        assert any(
            row.startswith(f"| `{section}`" if section else "| top level") and f"| `{name}` |" in row
            for row in table.splitlines()
        ), f"{section}.{name}"
