"""Recipes: one YAML file that names every setting of the chain `wedit run` replays.

Each section is the settings object of its method (``editor.core.settings``):
the same class gives the command's flags, so file, ``--set`` and command line
share one schema. The schema is strict (``extra="forbid"``): a misspelt key is
an error, not a silently ignored setting. Validation errors name the file, the
line and the field, found by walking the YAML node tree (``yaml.compose`` keeps
the marks) along the error's location. ``--set section.field=value`` on the
command line overrides any field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from editor.core.settings import Settings
from editor.data.biases import PRESETS
from editor.errors import EditorError
from editor.evaluation.settings import EvalSettings
from editor.io.sources import ModelSettings
from editor.methods.attribute.settings import AttributeSettings
from editor.methods.fit.settings import FitSettings
from editor.methods.inject.settings import InjectSettings
from editor.methods.search.settings import SearchSettings
from editor.methods.steer.settings import SteerSettings
from editor.pipeline.settings import ExportSettings, GgufSettings, VerifySettings

OPTIONAL_STAGES = ("inject", "attribute", "steer", "fit", "search", "eval", "gguf")


class Recipe(Settings):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][\w.-]*$", description="names the run directory runs/NAME")
    description: str = Field(
        "", description="one line on what the recipe makes (shown by `wedit recipes` and in the card)"
    )
    biases: list[str] = Field(
        min_length=1, description="preset names (editor/data/biases.py); several give the union of heads"
    )
    model: ModelSettings = ModelSettings()
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for every stage (1 is fastest on a CPU shared with other jobs)"
    )
    inject: InjectSettings | None = None
    attribute: AttributeSettings | None = None
    steer: SteerSettings | None = None
    fit: FitSettings | None = None
    search: SearchSettings | None = None  # type: ignore[valid-type]
    export: ExportSettings = ExportSettings()
    verify: VerifySettings = VerifySettings()
    eval: EvalSettings | None = None
    gguf: GgufSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _switches(cls, data: Any) -> Any:
        # `attribute:` with nothing under it reads as null in YAML; a user writing it means "on, with defaults".
        # `false` (or leaving the key out) switches an optional stage off.
        if isinstance(data, dict):
            data = dict(data)
            for key in OPTIONAL_STAGES:
                if key in data and data[key] is None:
                    data[key] = {}
                elif data.get(key) is False:
                    data[key] = None
        return data

    @field_validator("biases")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in PRESETS]
        if unknown:
            raise ValueError(f"unknown bias {unknown[0]!r}; presets: {', '.join(sorted(PRESETS))}")
        return names

    @model_validator(mode="after")
    def _has_a_method(self) -> Recipe:
        if self.attribute is None and self.steer is None and self.fit is None and self.search is None:
            raise ValueError(
                "a recipe needs an attribute, steer, fit or search section (or several): they make the plan"
            )
        if self.inject is not None and self.attribute is None:
            raise ValueError("inject trains a bias token that only attribution uses; add an attribute section")
        if self.inject is not None and (self.attribute.target is not None or self.attribute.token is not None):
            raise ValueError(
                "attribute: with inject, attribution asks about the injected token; remove target and token"
            )
        if self.attribute is not None and self.attribute.pairs is not None and len(self.biases) > 1:
            raise ValueError("attribute.pairs holds the questions of one bias; list one bias or leave pairs out")
        return self


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest YAML node along a pydantic error location."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            key, node = match
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field(loc: tuple[Any, ...]) -> str:
    # Pydantic adds the union member's type name to the location of an optional section; it names no field.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p[:1].isupper())]
    return ".".join(parts) or "(recipe)"


def validate_recipe(data: Any, where: str, node: yaml.Node | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise EditorError(
            f"{where}: a recipe is a YAML mapping of sections (name, biases, model, ...); got {type(data).__name__}"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the recipe schema, docs/pages/reference: `make docs`)"
        raise EditorError(f"{where}:{_line_of(node, loc)}: field {_field(loc)}: {message}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``section.field=value`` set (the value read as YAML)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise EditorError(f"--set {item!r}: write section.field=value, e.g. attribute.seeds=2")
        keys = path.split(".")
        target = data
        for key in keys[:-1]:
            if target.get(key) is None:
                target[key] = {}
            target = target[key]
            if not isinstance(target, dict):
                raise EditorError(f"--set {item!r}: {key} is not a section")
        try:
            target[keys[-1]] = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise EditorError(f"--set {item!r}: the value is not valid YAML ({problem}); quote it or fix it") from None
    return data


BUILTIN_PACKAGE = "editor.recipes.builtin"  # the repository's recipes/ folder, installed as package data


def builtin_recipes() -> dict[str, Path]:
    """Name -> file of every recipe shipped with the package."""
    from importlib import resources

    folder = Path(str(resources.files(BUILTIN_PACKAGE)))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def find_recipe(spec: str | Path) -> Path:
    """A recipe file: ``spec`` itself when it is a file, else the built-in recipe of that name."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    builtin = builtin_recipes().get(str(spec).removesuffix(".yaml")) if "/" not in str(spec) else None
    if builtin is not None:
        return builtin
    raise EditorError(f"{spec}: no such recipe file or built-in recipe; `wedit recipes` lists the built-in ones")


def recipe_description(path: Path) -> str:
    """The recipe's one-line description (its ``description`` field, folded), or an empty string."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return ""
    text = data.get("description", "") if isinstance(data, dict) else ""
    return " ".join(str(text).split())


def load_recipe(path: str | Path, overrides: list[str] = ()) -> tuple[Recipe, dict[str, Any]]:
    """Read, override and validate a recipe; return it with the plain data (as written into manifests)."""
    path = find_recipe(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EditorError(f"{path}: recipe not found; `wedit recipes` lists the built-in ones") from None
    except OSError as err:
        raise EditorError(f"{path}: cannot read the recipe ({err.strerror})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise EditorError(f"{path}{line}: not valid YAML: {problem}") from None
    if overrides:
        if not isinstance(data, dict):
            raise EditorError(f"{path}: a recipe is a YAML mapping of sections; got {type(data).__name__}")
        data = apply_overrides(data, list(overrides))
    return validate_recipe(data, str(path), node), data


def _default_text(info: Any) -> str:
    default = info.get_default(call_default_factory=True)
    if info.is_required():
        return "required"
    if isinstance(default, bool):
        return "true" if default else "false"
    if default is None:
        return "null"
    if isinstance(default, list):
        return "[" + ", ".join(str(v) for v in default) + "]"
    if isinstance(default, Settings):
        return ""
    return f"`{default}`" if isinstance(default, str) and default else str(default) or '""'


def _settings_class(annotation: Any) -> type[Settings] | None:
    """The Settings class of a section field (optional or not), or None for a plain field."""
    return next(
        (a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, Settings)),
        None,
    )


def schema_markdown() -> str:
    """The recipe reference table, generated from the settings classes (the docs' Recipe schema page is this). A section
    inside a section (the search's ``unlink_mlp``) is listed after its parent's own fields, as ``search.unlink_mlp``."""
    rows = ["| section | field | default | meaning |", "|---|---|---|---|"]

    def section(path: str, cls: type[Settings]) -> None:
        top = path.split(".")[0]
        label = "top level" if not path else f"`{path}`" + (" (optional)" if top in OPTIONAL_STAGES else "")
        nested = []
        for name, info in cls.model_fields.items():
            inner = _settings_class(info.annotation)
            if inner is not None:
                nested.append((name, inner))
                continue
            rows.append(
                f"| {label} | `{name}` | {_default_text(info)} | {(info.description or '').replace('|', '/')} |"
            )
        for name, inner in nested:
            section(f"{path}.{name}" if path else name, inner)

    section("", Recipe)
    return "\n".join(rows) + "\n"
