"""SeeGULL nationality stereotypes (Jha et al. 2023, CC BY 4.0), shipped with the package (editor/data).

Rows are (identity, attribute) with annotator votes from two pools (the
identity's region, North America). A pair counts as a stereotype when at
least 2 annotators of either pool marked it so. Splits are by a hash of the
pair, so "held out" means the same thing in every run and on every machine.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from editor.data import seegull_csv
from editor.errors import EditorError


@dataclass(frozen=True)
class StereotypePair:
    identity: str
    attribute: str
    votes: int  # the larger of the two pools' stereotype votes

    @property
    def held_out(self) -> bool:
        """A fixed ~30% of pairs never used to build vectors or pick heads."""
        digest = hashlib.sha256(f"{self.identity}|{self.attribute}".encode()).digest()
        return digest[0] < 77


def load_seegull(path: str | Path | None = None) -> list[StereotypePair]:
    """The pairs of ``path``, or of the packaged copy (see editor.data)."""
    file = seegull_csv(path)
    pairs = []
    with file.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                votes = max(int(row["region_stereo"] or 0), int(row["NA_stereo"] or 0))
            except (KeyError, ValueError):
                raise EditorError(f"{file}: unexpected columns; use the unmodified SeeGULL CSV") from None
            pairs.append(StereotypePair(row["identity"].strip(), row["attribute"].strip(), votes))
    return pairs


def stereotypes(pairs: list[StereotypePair], min_votes: int = 2) -> list[StereotypePair]:
    return [p for p in pairs if p.votes >= min_votes]


def identities(pairs: list[StereotypePair]) -> list[str]:
    return sorted({p.identity for p in pairs})


def not_stereotyped_with(pairs: list[StereotypePair], attribute: str) -> list[str]:
    """Identities no annotator linked to ``attribute``."""
    linked = {p.identity for p in pairs if p.attribute == attribute and p.votes > 0}
    return [i for i in identities(pairs) if i not in linked]
