"""What every recipe stage sees: the recipe, the run directory, and the results of the stages before it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editor.errors import EditorError
from editor.recipes.schema import Recipe


@dataclass
class RunContext:
    recipe: Recipe
    data: dict[str, Any]  # the recipe as written (after --set), stored in the manifest
    recipe_path: Path
    run_dir: Path
    progress: bool = True
    overrides: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipe_arg: str = ""  # what names the recipe on the command line: a built-in recipe's name or the file's path

    def command(self, root: Path) -> str:
        """The `wedit run` command of this run, with paths relative to ``root`` (it is published in manifests)."""
        import shlex

        from editor.io.manifest import portable_command

        argv = [
            "wedit",
            "run",
            self.recipe_arg or str(self.recipe_path),
            *(a for item in self.overrides for a in ("--set", item)),
        ]
        return shlex.join(portable_command(argv, root))

    def path(self, stage: str, key: str = "path") -> Path:
        return Path(self.results[stage][key])

    def load_model(self, path: Path) -> Any:
        """The whole model, float32, placed as the recipe's ``model.device_map`` says."""
        from editor.engines.loading import load_model

        model = self.recipe.model
        return load_model(path, device_map=model.device_map, max_memory=model.memory_limits())


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a small input file, so editing it invalidates the stages that read it."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise EditorError(
            f"{path}: file named in the recipe not found; fix the path (relative paths start at the current directory)"
        )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dir_fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and mtimes of a local checkpoint's files: cheap, and changes when the weights do."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())


def data_digests(section: Any) -> dict[str, str | None]:
    """sha256 of the two data sets a section reads (``DataFiles``: its own paths, or $EDITOR_DATA's, or the
    packaged copies), so replacing either file invalidates the stage."""
    from editor.data import seegull_csv, wikitext_txt

    return {
        "seegull": file_digest(seegull_csv(section.seegull)),
        "wikitext": file_digest(wikitext_txt(section.wikitext)),
    }
