"""The environment variables editor reads, as one pydantic-settings object (``EDITOR_*`` and XDG_CACHE_HOME).

A flag or recipe field names a path for one run; these name one for every run
on the machine. ``Environment()`` reads the variables as they are at the call:
callers make one where they need it and keep none, so a variable set after
import (a test's monkeypatch, a parent process) counts. An empty variable is
unset, as the XDG base directory spec asks of XDG_CACHE_HOME.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(BaseSettings):
    """``EDITOR_DATA``, ``EDITOR_CACHE``, ``EDITOR_LLAMA_CPP`` and ``XDG_CACHE_HOME``; None where unset."""

    model_config = SettingsConfigDict(env_prefix="EDITOR_", env_ignore_empty=True, extra="ignore", frozen=True)

    data: Path | None = Field(
        default=None,
        description="folder holding the data files (SeeGULL CSV, WikiText-2 text) to read instead of the packaged "
        "copies; a --seegull/--wikitext flag or recipe field still wins",
    )
    cache: Path | None = Field(
        default=None,
        description="editor's cache folder (converted built-in models and GGUFs, llama.cpp's converter); "
        "default $XDG_CACHE_HOME/editor",
    )
    llama_cpp: Path | None = Field(
        default=None,
        description="a llama.cpp checkout whose convert_hf_to_gguf.py is used instead of the one fetched from the "
        "llama-cpp-python source distribution",
    )
    # Not editor's own: the XDG variable keeps its name (an alias is read without the prefix).
    xdg_cache_home: Path | None = Field(
        default=None, validation_alias="XDG_CACHE_HOME", description="the user's cache base folder; ~/.cache when unset"
    )

    def cache_root(self) -> Path:
        """``$EDITOR_CACHE``, else ``$XDG_CACHE_HOME/editor``, else ``~/.cache/editor``."""
        if self.cache is not None:
            return self.cache
        return (self.xdg_cache_home or Path.home() / ".cache") / "editor"
