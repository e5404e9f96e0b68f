"""llama.cpp's converter and quantizer: where the converter comes from, running it on an export, quantizing.

The llama-cpp-python wheel holds llama.cpp's libraries (and so its quantizer,
``llama_model_quantize``) but not its converter: ``convert_hf_to_gguf.py``,
its ``conversion/`` package and the vendored ``gguf-py`` are only in the
source distribution of the same version. They are taken from there once, with
pip, and kept in ``~/.cache/editor/llama.cpp-VERSION/`` (``EDITOR_CACHE``
moves it); ``EDITOR_LLAMA_CPP`` names a llama.cpp checkout to use instead.
``python -m editor.pipeline.gguf.converter`` fetches it ahead of time (the
Makefile's setup does, so the tests need no network).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from editor.core.environment import Environment
from editor.errors import EditorError
from editor.io.atomic import staged_directory
from editor.io.sources import cache_root

PINNED = "0.3.36"  # the llama-cpp-python the Makefile installs; the documented numbers were measured with it
INSTALL_HINT = (
    f"pip install llama-cpp-python=={PINNED} (the Makefile's setup does; see the docs' Export and serving page)"
)
OVERRIDE = "EDITOR_LLAMA_CPP"
# What the converter needs (plus llama.cpp's licence, and the model graphs the rules in editor.core.gguf_rules
# were read from, so the tests can check them against the source).
KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE", "src/models/")
FTYPES = {
    "f32": "ALL_F32",
    "f16": "MOSTLY_F16",
    "bf16": "MOSTLY_BF16",
    "q8_0": "MOSTLY_Q8_0",
    "q6_k": "MOSTLY_Q6_K",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q4_k_m": "MOSTLY_Q4_K_M",
}


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise EditorError(f"GGUF conversion and llama.cpp checks need llama-cpp-python: {INSTALL_HINT}") from None


def converter_dir() -> Path:
    """A folder holding convert_hf_to_gguf.py, conversion/ and gguf-py/ that match the installed llama.cpp."""
    override = Environment().llama_cpp
    if override is not None:
        path = override.expanduser()
        if not (path / "convert_hf_to_gguf.py").is_file():
            raise EditorError(f"{OVERRIDE}={override}: no convert_hf_to_gguf.py there; name a llama.cpp checkout")
        return path
    version = llama_cpp_version()
    target = cache_root() / f"llama.cpp-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    print(f"fetching llama.cpp's converter from the llama-cpp-python {version} source (once) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        return unpack_converter(_download_sdist(version, Path(tmp)), target)


def _download_sdist(version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
    command += ["--retries", "1", "--timeout", "30", "--dest", str(into), f"llama-cpp-python=={version}"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not found:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise EditorError(
            f"cannot fetch llama.cpp's converter: `pip download --no-binary :all: llama-cpp-python=={version}` "
            f"failed ({lines[-1].strip() if lines else 'no source distribution'}); run it once with access to PyPI, "
            f"or set {OVERRIDE} to a llama.cpp checkout"
        )
    return found[0]


def unpack_converter(sdist: Path, target: Path) -> Path:
    """Keep the converter's files of a llama-cpp-python sdist (under vendor/llama.cpp/) in ``target``."""
    with staged_directory(target, force=True) as tmp, tarfile.open(sdist) as tar:
        kept = 0
        for member in tar.getmembers():
            _, _, inside = member.name.partition("/vendor/llama.cpp/")
            if not inside.startswith(KEEP) or not (member.isfile() or member.isdir()):
                continue
            member.name = inside
            tar.extract(member, tmp, filter="data")
            kept += 1
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise EditorError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py in this source distribution")
    return target


def convert_f32(export_dir: Path, out_file: Path, keys: dict[str, str], *, progress: bool = True) -> float:
    """Run llama.cpp's converter on ``export_dir`` into an f32 GGUF at ``out_file``; return the seconds it took."""
    import json

    from tqdm.auto import tqdm

    from editor.io.checkpoint import Checkpoint

    converter = converter_dir()
    n_tensors = len(Checkpoint.open(export_dir).metas)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(keys, handle)
    package_root = str(Path(__file__).resolve().parents[3])  # the driver must import from this very editor
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "editor.pipeline.gguf.driver", str(converter), handle.name]
    command += [str(export_dir), str(out_file)]
    tail: deque[str] = deque(maxlen=40)
    start = time.monotonic()
    try:
        with (
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc,
            tqdm(total=n_tensors, desc="gguf f32", unit="tensor", disable=not progress) as bar,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                if " --> " in line:  # the converter logs one such line per tensor it writes
                    bar.update(1)
            returncode = proc.wait()
    finally:
        os.unlink(handle.name)
    if returncode != 0:
        reason = next((line for line in reversed(tail) if "Error" in line or "error" in line), tail[-1] if tail else "")
        raise EditorError(f"{export_dir}: llama.cpp's converter failed: {reason.strip()}")
    return time.monotonic() - start


# llama.cpp logs through one process-wide callback; ours keeps the last lines for error messages.
_LOG: deque[str] = deque(maxlen=60)
_CALLBACK: Any = None


@contextmanager
def llama_cpp_log() -> Iterator[deque[str]]:
    """Collect llama.cpp's log lines instead of printing them (quantizing logs every tensor)."""
    global _CALLBACK
    import llama_cpp

    if _CALLBACK is None:

        @llama_cpp.llama_log_callback
        def collect(level: int, text: bytes, user_data: Any) -> None:
            _LOG.append(text.decode("utf-8", "replace").rstrip())

        _CALLBACK = collect
    _LOG.clear()
    llama_cpp.llama_log_set(_CALLBACK, ctypes.c_void_p(0))
    yield _LOG


def quantize(source: Path, target: Path, gguf_type: str, *, threads: int = 1) -> float:
    """llama.cpp's quantizer (``llama_model_quantize``) from an f32 GGUF to ``gguf_type``; the seconds it took."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{FTYPES[gguf_type]}")
    params.nthread = threads
    start = time.monotonic()
    with llama_cpp_log() as log:
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        detail = next((line for line in reversed(log) if line), f"code {code}")
        raise EditorError(f"{source}: llama.cpp's quantizer failed to write {gguf_type}: {detail}")
    return time.monotonic() - start


if __name__ == "__main__":
    print(converter_dir())
