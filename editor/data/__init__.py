"""Data sets shipped inside the package (SeeGULL, WikiText-2 test), found through importlib.resources.

An installed wheel carries them, so evaluation and steering work with nothing
but the package. A path given on the command line or in a recipe wins; then a
folder named by ``EDITOR_DATA``; then the packaged copy.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import Field

from editor.core.environment import Environment
from editor.core.settings import Settings
from editor.errors import EditorError

SEEGULL_FILE = "seegull_stereotypes_global_v2.csv"
WIKITEXT_FILE = "wikitext2_test.txt"

# What a model card says when an evaluation used the data set.
CREDITS = {
    SEEGULL_FILE: "SeeGULL (Jha et al. 2023), google-research-datasets/seegull, CC BY 4.0",
    WIKITEXT_FILE: "WikiText-2 test split (Merity et al. 2016), CC BY-SA 3.0",
}


class DataFiles(Settings):
    """The two data sets a method reads, each the packaged copy unless named (base of the methods' settings)."""

    seegull: str | None = Field(
        None, description="SeeGULL CSV (null: $EDITOR_DATA, else the copy shipped in the package)"
    )
    wikitext: str | None = Field(
        None, description="WikiText-2 test text (null: $EDITOR_DATA, else the copy shipped in the package)"
    )


def packaged(name: str) -> Path:
    """The packaged copy of a data file. Wheels install package data as plain files, so this is a real path."""
    path = Path(str(resources.files(__package__) / name))
    if not path.is_file():
        raise EditorError(f"{path}: packaged data file missing; reinstall wedit")
    return path


def data_file(name: str, explicit: str | Path | None = None, *, flag: str) -> Path:
    """``explicit`` (a flag or recipe field) if given, else ``$EDITOR_DATA/name``, else the packaged copy."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise EditorError(f"{path}: file not found; fix {flag} (or leave it out to use the packaged copy)")
        return path
    folder = Environment().data
    if folder is not None:
        path = folder.expanduser() / name
        if not path.is_file():
            raise EditorError(
                f"{path}: not found; EDITOR_DATA names a folder that must hold {name} (unset it to use the packaged copy)"
            )
        return path
    return packaged(name)


def seegull_csv(explicit: str | Path | None = None) -> Path:
    return data_file(SEEGULL_FILE, explicit, flag="--seegull")


def wikitext_txt(explicit: str | Path | None = None) -> Path:
    return data_file(WIKITEXT_FILE, explicit, flag="--wikitext")
