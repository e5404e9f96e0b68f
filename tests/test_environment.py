"""The environment variables editor reads: one pydantic-settings object, read at each call, with the precedence
and error messages of the modules that use it (data files, the cache folder, llama.cpp's converter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from editor.core.environment import Environment
from editor.data import SEEGULL_FILE, packaged, seegull_csv
from editor.errors import EditorError
from editor.io.sources import cache_root

VARIABLES = ("EDITOR_DATA", "EDITOR_CACHE", "EDITOR_LLAMA_CPP", "XDG_CACHE_HOME")


@pytest.fixture
def clean(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_field_is_described_and_unset_is_none(clean):
    env = Environment()
    assert (env.data, env.cache, env.llama_cpp, env.xdg_cache_home) == (None, None, None, None)
    assert all(field.description for field in Environment.model_fields.values())


def test_read_at_each_call_and_empty_is_unset(clean, tmp_path):
    assert Environment().data is None
    clean.setenv("EDITOR_DATA", str(tmp_path))  # after import: a fresh object sees it
    assert Environment().data == tmp_path
    clean.setenv("EDITOR_DATA", "")
    assert Environment().data is None


def test_cache_root_precedence(clean, tmp_path):
    assert cache_root() == Path.home() / ".cache" / "editor"
    clean.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "editor"
    clean.setenv("EDITOR_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"  # editor's own variable wins, used as it is (no "editor" below)
    clean.setenv("EDITOR_CACHE", "")
    clean.setenv("XDG_CACHE_HOME", "")
    assert cache_root() == Path.home() / ".cache" / "editor"


def test_data_folder_precedence_and_message(clean, tmp_path):
    assert seegull_csv() == packaged(SEEGULL_FILE)
    clean.setenv("EDITOR_DATA", str(tmp_path))
    with pytest.raises(EditorError) as err:
        seegull_csv()
    assert str(err.value) == (
        f"{tmp_path / SEEGULL_FILE}: not found; EDITOR_DATA names a folder that must hold {SEEGULL_FILE} "
        "(unset it to use the packaged copy)"
    )
    (tmp_path / SEEGULL_FILE).write_text("x\n")
    assert seegull_csv() == tmp_path / SEEGULL_FILE
    explicit = tmp_path / "other.csv"
    explicit.write_text("x\n")
    assert seegull_csv(explicit) == explicit  # a flag or recipe field wins over the variable


def test_llama_cpp_override(clean, tmp_path):
    from editor.pipeline.gguf.converter import converter_dir

    clean.setenv("EDITOR_LLAMA_CPP", str(tmp_path))
    with pytest.raises(EditorError) as err:
        converter_dir()
    assert str(err.value) == f"EDITOR_LLAMA_CPP={tmp_path}: no convert_hf_to_gguf.py there; name a llama.cpp checkout"
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    assert converter_dir() == tmp_path


def test_importable_without_torch():
    code = "import json, sys, editor.core.environment, editor.data; print(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) is False
