"""One settings schema: every recipe field has a command-line flag and every flag of a method's command is a
recipe field (or one of the few command-level arguments named here), so no default is declared twice."""

from __future__ import annotations

import argparse

import pytest

from editor.cli import build_parser
from editor.core.settings import Settings, flag_name, from_flags
from editor.errors import EditorError
from editor.evaluation.settings import EvalSettings
from editor.io.sources import ModelSettings
from editor.methods.attribute.settings import AttributeSettings
from editor.methods.inject.settings import InjectSettings
from editor.methods.steer.settings import SteerSettings
from editor.pipeline.settings import ExportSettings, GgufSettings, VerifySettings
from editor.recipes.schema import Recipe

# Command-level arguments: what to run on, where to write, how many threads. None of them is a setting.
COMMON = {"--help", "--out", "--force", "--threads"}
# command -> (its settings, the recipe section, arguments of the command itself, fields the command names otherwise)
COMMANDS = {
    "inject": (InjectSettings, "inject", {"--model", "--bias"}, set()),
    "attribute": (AttributeSettings, "attribute", {"--model", "--bias"}, set()),
    "steer": (SteerSettings, "steer", {"--model"}, set()),
    "eval": (EvalSettings, "eval", {"--base", "--no-record"}, set()),
    # The recipe attaches the run's own figures; on the command line --attach names the files. --gguf is the
    # gguf section's types, for `wedit gguf` on the export just written.
    "export": (ExportSettings, "export", {"--model", "--plan", "--attach", "--gguf"}, {"attach_figures"}),
    "verify": (VerifySettings, "verify", {"--base"}, set()),
    "gguf": (GgufSettings, "gguf", set(), set()),
}
MODEL_FLAGS = {"inject", "attribute", "steer"}  # commands that load the whole model take ModelSettings' flags


def flags_of(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {s for action in sub._actions for s in action.option_strings if s.startswith("--")}


def expected_flags(cls: type[Settings], skip: frozenset[str] | set[str] = frozenset()) -> set[str]:
    flags = set()
    for name, info in cls.model_fields.items():
        if name in skip:
            continue
        flags.add(flag_name(name))
        if info.annotation is bool:
            flags.add("--no-" + name.replace("_", "-"))
    return flags


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_is_a_flag_and_every_flag_a_setting(command):
    cls, section, own, named_otherwise = COMMANDS[command]
    assert Recipe.model_fields[section].annotation in (cls, cls | None)  # the recipe section is the settings class
    flags = flags_of(command)
    wanted = expected_flags(cls, named_otherwise)
    if command in MODEL_FLAGS:
        wanted |= expected_flags(ModelSettings, {"source"})  # source is --model
    missing = wanted - flags
    extra = flags - wanted - own - COMMON
    assert not missing, f"wedit {command} lacks flags for recipe fields: {sorted(missing)}"
    assert not extra, f"wedit {command} has flags that are no recipe field: {sorted(extra)}"


def test_a_flag_left_out_takes_the_field_default_and_values_are_validated():
    parser = argparse.ArgumentParser()
    from editor.core.settings import add_flags

    add_flags(parser, SteerSettings)
    settings = from_flags(
        SteerSettings, parser.parse_args(["--alphas", "0.5,1", "--layers", "3,4", "--keys", "contrast"])
    )
    assert settings.alphas == [0.5, 1.0] and settings.layers == [3, 4] and settings.keys == ["contrast"]
    assert settings.damage_budget == SteerSettings.model_fields["damage_budget"].default
    with pytest.raises(EditorError, match=r"--keys: .*contrast"):
        from_flags(SteerSettings, parser.parse_args(["--keys", "nonsense"]))
    with pytest.raises(EditorError, match=r"--alphas"):
        from_flags(SteerSettings, parser.parse_args(["--alphas", "0.5,x"]))
    parser = argparse.ArgumentParser()
    add_flags(parser, VerifySettings)
    assert from_flags(VerifySettings, parser.parse_args(["--vllm"])).vllm is True
    assert from_flags(VerifySettings, parser.parse_args(["--no-vllm"])).vllm is False


def test_recipe_and_flags_build_the_same_object():
    parser = argparse.ArgumentParser()
    from editor.core.settings import add_flags

    add_flags(parser, AttributeSettings)
    from_cli = from_flags(
        AttributeSettings, parser.parse_args(["--seeds", "2", "--questions", "30", "--eval-questions", "10"])
    )
    from_recipe = Recipe.model_validate(
        {"name": "x", "biases": ["always_late"], "attribute": {"seeds": 2, "questions": 30, "eval_questions": 10}}
    ).attribute
    assert from_cli == from_recipe


def test_a_command_builds_only_its_own_flags_and_answers_without_torch():
    """`wedit COMMAND` imports that command's module alone: a mistyped flag or `--help` answers in well under a second,
    since nothing imports torch before the command runs."""
    import subprocess
    import sys

    parser = build_parser(["gguf"])
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "--types" in {s for a in subs["gguf"]._actions for s in a.option_strings}
    assert {s for a in subs["export"]._actions for s in a.option_strings} == {"-h", "--help"}
    code = (
        "import sys\nfrom editor.cli import main\n"
        "for argv in (['gguf', '/nowhere', '--type', 'q9_9'], ['export', '--model']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'optuna', 'ml_dtypes') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert "--types: Input should be" in result.stderr and "--model: expected one argument" in result.stderr
