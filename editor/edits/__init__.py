"""Edits: serializable records, each with a run-time hook and a weight bake."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from editor.edits.ablate import AblateDirection
from editor.edits.add_token import AddToken
from editor.edits.base import Edit
from editor.edits.mean_heads import MeanHeads
from editor.edits.rank_one import RankOne
from editor.edits.residual_add import ResidualAdd
from editor.edits.scale_experts import ScaleExperts
from editor.edits.scale_heads import ScaleHeads
from editor.edits.zero_heads import ZeroHeads

AnyEdit = Annotated[
    ZeroHeads | MeanHeads | ScaleHeads | ResidualAdd | AblateDirection | RankOne | AddToken | ScaleExperts,
    Field(discriminator="kind"),
]
EDIT_ADAPTER: TypeAdapter[AnyEdit] = TypeAdapter(AnyEdit)
EDIT_KINDS = (
    "zero_heads",
    "mean_heads",
    "scale_heads",
    "residual_add",
    "ablate_direction",
    "rank_one",
    "add_token",
    "scale_experts",
)

__all__ = [
    "AblateDirection",
    "AddToken",
    "AnyEdit",
    "EDIT_ADAPTER",
    "EDIT_KINDS",
    "Edit",
    "MeanHeads",
    "RankOne",
    "ResidualAdd",
    "ScaleExperts",
    "ScaleHeads",
    "ZeroHeads",
]
