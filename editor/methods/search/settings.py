"""The search's settings: the recipe's ``search`` section and the flags of `wedit search`.

``SearchOptions`` holds what every search has; each registered method with settings adds its own section under
its name (``heads``, ``ablate_identity``, ``erase_identity``, ``unlink_mlp``), so ``SearchSettings`` is built
from the registry (``search_settings_type``): a new method's section needs no edit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from editor.methods.inputs import HeldOutData
from editor.methods.search.methods import REGISTRY, SearchMethod

# Flat keys of the search section before each method had its own; a recipe that still uses one is told where it
# went, rather than "unknown field".
MOVED = {
    "k_max": "heads.k_max",
    "removals": "heads.removals",
    "head_pairs": "heads.pairs",
    "identity_k_max": "ablate_identity.k_max",
    "erase_k": "erase_identity.k",
    "erase_steps": "erase_identity.steps",
    "erase_kl_weight": "erase_identity.kl_weight (and unlink_mlp.kl_weight)",
    "erase_prompts": "erase_identity.prompts",
    "unlink_rank": "unlink_mlp.rank",
    "unlink_layers": "unlink_mlp.layers",
    "unlink_steps": "unlink_mlp.steps",
    "unlink_learning_rate": "unlink_mlp.learning_rate",
}


class SearchOptions(HeldOutData):
    """One Optuna search over bakes and head removals: bias on the select fold against damage, inside a budget."""

    trials: int = Field(40, ge=1, description="trials Optuna runs (each is one hooked scoring of the select fold)")
    contrasts: list[Literal["frames", "frames_identity", "templates", "negation", "introspective", "data"]] = Field(
        ["frames", "frames_identity", "templates", "negation", "introspective"],
        min_length=1,
        description="statement sets vectors are built from (editor/methods/statements; data: the file)",
    )
    sites: list[Literal["block", "attn", "mlp"]] = Field(
        ["block", "attn", "mlp"],
        min_length=1,
        description="residual_add sites: the stream after the block or after its attention, or the MLP's output",
    )
    layers: list[int] | None = Field(None, description="blocks a trial may use (null: 30% to 90% depth)")
    damage_budget: float = Field(0.02, gt=0, description="largest allowed relative WikiText-2 perplexity increase")
    kl_budget: float = Field(0.05, gt=0, description="largest allowed first-token KL on neutral prompts")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="Optuna sampler (TPE suits a few dozen trials)")
    statements: int = Field(150, ge=10, description="build-fold pairs per contrast (two statements each)")
    select_pairs: int = Field(40, ge=5, description="select-fold pairs for the association gap a trial is scored on")
    select_items: int = Field(64, ge=8, description="select-fold sentence frames a trial is scored on")
    data: str | None = Field(
        None, description="labelled JSONL/CSV (text, label 1=biased/0=neutral) for the 'data' contrast"
    )
    report_methods: bool = Field(
        False,
        description="also measure every method's best trial like the chosen plan (build and test folds; ~2 min each)",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in MOVED:
                    raise ValueError(f"'{key}' moved to the method's own section: write {MOVED[key]}")
        return data

    @model_validator(mode="after")
    def _data_contrast_has_a_file(self) -> SearchOptions:
        if "data" in self.contrasts and not self.data:
            raise ValueError("the 'data' contrast reads the file given as 'data' (a labelled JSONL or CSV); give one")
        return self


def search_settings_type(registry: Mapping[str, type[SearchMethod]] | None = None) -> type[SearchOptions]:
    """``SearchOptions`` with ``methods`` (the registry's names) and one section per method that has settings."""
    registry = REGISTRY if registry is None else registry
    names = tuple(registry)
    defaults = [name for name, method in registry.items() if method.searched_by_default]
    optional = ", ".join(name for name, method in registry.items() if not method.searched_by_default)
    fields: dict[str, Any] = {
        "methods": (
            list[Literal[names]],  # type: ignore[valid-type]
            Field(
                defaults,
                min_length=1,
                description="what a trial may apply (editor/methods/search/methods/)"
                + (f"; {optional} only when named" if optional else ""),
            ),
        )
    }
    for name, method in registry.items():
        if method.settings_type is not None:
            fields[name] = (
                method.settings_type,
                Field(default_factory=method.settings_type, description=f"{name}: {method.summary}"),
            )
    return create_model("SearchSettings", __base__=SearchOptions, __doc__=SearchOptions.__doc__, **fields)


SearchSettings = search_settings_type()


def method_objects(settings: SearchOptions, registry: Mapping[str, type[SearchMethod]] | None = None) -> list:
    """The searched methods, in the registry's order, each with its settings section."""
    registry = REGISTRY if registry is None else registry
    chosen = set(getattr(settings, "methods"))  # noqa: B009 (a field of the type built from the registry)
    return [
        method(getattr(settings, name, None) if method.settings_type else None)
        for name, method in registry.items()
        if name in chosen
    ]
