"""The search's methods: one registered object each (``base.SearchMethod``). Adding a method is a module beside
these and one line in ``REGISTRY``; its settings section, its flags and its place among a trial's choices follow
from the registry. The order is the order methods are tried in and listed."""

from __future__ import annotations

from editor.methods.search.methods.ablate_direction import AblateDirectionSearch
from editor.methods.search.methods.ablate_identity import AblateIdentitySearch
from editor.methods.search.methods.base import SearchMethod
from editor.methods.search.methods.erase_identity import EraseIdentitySearch
from editor.methods.search.methods.heads import HeadsSearch
from editor.methods.search.methods.heads_residual_add import HeadsResidualAddSearch
from editor.methods.search.methods.residual_add import ResidualAddSearch
from editor.methods.search.methods.selective_add import SelectiveAddSearch
from editor.methods.search.methods.steer2edit import Steer2EditSearch
from editor.methods.search.methods.unlink_mlp import UnlinkMlpSearch

REGISTRY: dict[str, type[SearchMethod]] = {
    method.name: method
    for method in (
        ResidualAddSearch,
        SelectiveAddSearch,
        AblateDirectionSearch,
        AblateIdentitySearch,
        EraseIdentitySearch,
        UnlinkMlpSearch,
        Steer2EditSearch,
        HeadsSearch,
        HeadsResidualAddSearch,
    )
}

__all__ = ["REGISTRY", "SearchMethod"]
