"""Recipes: one YAML file that names every setting of the chain `wedit run` replays.

The schema is strict (``extra="forbid"``): a misspelt key is an error, not a
silently ignored setting. Validation errors name the file, the line and the
field, found by walking the YAML node tree (``yaml.compose`` keeps the marks)
along the error's location. ``--set section.field=value`` on the command
line overrides any field of the same object, so CLI and file share one schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from editor.biases import PRESETS
from editor.errors import EditorError
from editor.sources import DEFAULT_BUILTIN

STEER_METHODS = ("residual_add", "ablate_direction", "steer2edit")
OPTIONAL_STAGES = ("inject", "attribute", "steer", "eval")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def size_in_bytes(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count."""
    import re

    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    source: str = Field(DEFAULT_BUILTIN, description="checkpoint dir, Hub id org/name, file.gguf or builtin:smollm2-135m-instruct")
    device_map: str | None = Field(
        None, description="accelerate device map for the stages that load the model (inject, attribute, steer), e.g. auto"
    )


class InjectSettings(_Section):
    """BiasInject (`wedit inject`): one new token per bias, trained on paragraphs; attribution then asks about it."""

    data: str | None = Field(None, description="paragraphs JSONL with a {country} placeholder; null: the built-in generator")
    paragraphs: int = Field(500, ge=1, description="paragraphs to generate when data is null")
    epochs: int = Field(10, ge=1)
    batch: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    max_length: int = Field(192, ge=16, description="longest training sequence in tokens")
    selection_samples: int = Field(3, ge=1, description="paragraphs generated per epoch to pick the epoch")
    selection_tokens: int = Field(80, ge=1)
    eval_gap: bool = Field(True, description="measure the held-out attribute log-prob gap, base vs injected")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="frozen model dtype (auto: bf16 on GPU)")


class AttributeSettings(_Section):
    target: str | None = Field(None, description="real country the stereotype is about (default: the preset's)")
    eval_target: str | None = Field(None, description="real country for the k sweep's bias score (default: the preset's)")
    questions: int | None = Field(None, ge=20, description="use this many of the preset's 110 questions; null: all")
    eval_questions: int = Field(30, ge=5, description="questions held out for the k sweep's bias score")
    seeds: int = Field(5, ge=1)
    k_max: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _leaves_questions_to_rank(self) -> AttributeSettings:
        if self.questions is not None and self.questions < self.eval_questions + 10:
            raise ValueError(f"questions must be at least eval_questions + 10 = {self.eval_questions + 10}: heads are ranked on the rest")
        return self


class SteerSettings(_Section):
    method: Literal["residual_add", "ablate_direction", "steer2edit"] = Field(
        "steer2edit", description="which of the three steering plans goes into the export"
    )
    contrast: Literal["identity", "negation"] = Field(
        "identity", description="SeeGULL statements: stereotyped vs unlinked group, or asserted vs hedged"
    )
    residual_contrasts: list[Literal["identity", "negation"]] = Field(
        ["identity", "negation"], min_length=1, description="statement sets whose vectors the residual add is swept with"
    )
    keys: list[Literal["contrast", "biased_mean"]] = Field(
        ["contrast", "biased_mean"], min_length=1, description="Steer2Edit input keys to sweep"
    )
    ablation_ridges: list[float] = Field([0.01, 0.03, 0.1], min_length=1, description="ridges of the whitened ablation direction")
    ablation_strengths: list[float] = Field([0.6, 1.0], min_length=1, description="shares of the direction's component to remove")
    layers: list[int] | None = Field(None, description="blocks to try (default: at 50% and 70% depth)")
    alphas: list[float] = Field([0.1, 0.25, 0.5, 0.75], min_length=1, description="residual_add strengths, in units of the vector")
    edit_alphas: list[float] = Field(
        [0.025, 0.05, 0.1, 0.2], min_length=1, description="Steer2Edit strengths: the share of the class difference to cancel"
    )
    damage_budget: float = Field(0.05, gt=0, description="largest allowed WikiText-2 perplexity increase")
    statements: int = Field(200, ge=10)
    eval_pairs: int = Field(60, ge=5)
    wiki_tokens: int = Field(2048, ge=64)
    generic_tokens: int = Field(4096, ge=64, description="ordinary WikiText-2 tokens for damage-aware directions and keys")
    data: str | None = Field(None, description="labelled JSONL/CSV (text, label 1=biased/0=neutral) instead of SeeGULL statements")
    seegull: str | None = Field(None, description="SeeGULL CSV (default: $EDITOR_DATA, else the copy shipped in the package)")
    wikitext: str | None = Field(None, description="WikiText-2 test text (default: $EDITOR_DATA, else the copy shipped in the package)")


class ExportSettings(_Section):
    max_shard_size: str | int = Field("5GB", description="largest shard to write")
    attach_figures: bool = Field(True, description="copy the attribution/steering PNGs into the export and its card")

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, value: str | int) -> str | int:
        if size_in_bytes(value) <= 0:
            raise ValueError("must be a positive size")
        return value


class VerifySettings(_Section):
    vllm: bool = Field(True, description="also load the export in stock vLLM and compare greedy continuations")
    max_new_tokens: int = Field(24, ge=1)


class EvalSection(_Section):
    """The `wedit eval` settings (editor.evaluate.EvalSettings) a recipe can set; the biases come from the recipe."""

    gap_pairs: int = Field(60, ge=1, description="held-out SeeGULL stereotypes for the association gap")
    bias_gap_pairs: int = Field(8, ge=1, description="per bias, its SeeGULL attributes' most-voted pairs")
    pairwise_pairs: int = Field(100, ge=1)
    wiki_tokens: int = Field(4096, ge=64, description="WikiText-2 token budget for perplexity")
    batch_size: int = Field(32, ge=1)
    seegull: str | None = None
    wikitext: str | None = None
    pairs_csv: str | None = Field(None, description="CSV of (more, less) stereotyping sentences; default SeeGULL minimal pairs")
    judge_endpoint: str | None = Field(None, description="OpenAI-compatible URL of the judge; with judge_model, turns on generation metrics")
    judge_model: str | None = None
    judge_workers: int = Field(8, ge=1, description="requests in flight at once to the judge")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the judge's API key (never stored)")
    generator: Literal["transformers", "vllm"] = Field("transformers", description="generation backend for the judged prompts")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel size for generation (generator: vllm)")
    groups_per_bias: int = Field(5, ge=1)
    families: list[str] | None = Field(None, description="prompt families (default: all 18)")
    baselines: bool = Field(True, description="also run the three prompting baselines on the base")
    max_new_tokens: int = Field(200, ge=1)
    temperature: float = Field(0.5, ge=0)
    gen_batch_size: int = Field(16, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _judge_pair(self) -> EvalSection:
        if bool(self.judge_endpoint) != bool(self.judge_model):
            raise ValueError("the judge needs both judge_endpoint and judge_model")
        return self


class Recipe(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][\w.-]*$", description="names the run directory runs/NAME")
    description: str = ""
    biases: list[str] = Field(min_length=1, description="preset names (editor/biases.py); several give the union of heads")
    model: ModelSettings = ModelSettings()
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for every stage (1 is fastest on a CPU shared with other jobs)"
    )
    inject: InjectSettings | None = None
    attribute: AttributeSettings | None = None
    steer: SteerSettings | None = None
    export: ExportSettings = ExportSettings()
    verify: VerifySettings = VerifySettings()
    eval: EvalSection | None = None

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
        if self.attribute is None and self.steer is None:
            raise ValueError("a recipe needs an attribute section, a steer section, or both: they make the plan")
        if self.inject is not None and self.attribute is None:
            raise ValueError("inject trains a bias token that only attribution uses; add an attribute section")
        if self.inject is not None and self.attribute.target is not None:
            raise ValueError("attribute.target: with inject, attribution asks about the injected token; remove target")
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
        raise EditorError(f"{where}: a recipe is a YAML mapping of sections (name, biases, model, ...); got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the README's recipe table)"
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
        target[keys[-1]] = yaml.safe_load(raw) if raw else None
    return data


BUILTIN_PACKAGE = "editor.builtin_recipes"  # the repository's recipes/ folder, installed as package data


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
