"""The search's settings: the recipe's ``search`` section and the flags of `wedit search`."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from editor.core.settings import Settings

SearchMethod = Literal[
    "residual_add",
    "selective_add",
    "ablate_direction",
    "ablate_identity",
    "erase_identity",
    "unlink_mlp",
    "steer2edit",
    "heads",
    "heads+residual_add",
]
SEARCH_METHODS: tuple[str, ...] = get_args(SearchMethod)
# Searched unless a search names its methods. unlink_mlp is left out: its fit takes about 7 minutes on 2 cores
# (editor/methods/search/unlink.py).
DEFAULT_METHODS: tuple[str, ...] = tuple(m for m in SEARCH_METHODS if m != "unlink_mlp")


class SearchSettings(Settings):
    """One Optuna search over bakes and head removals: bias on the select fold against damage, inside a budget."""

    trials: int = Field(40, ge=1, description="trials Optuna runs (each is one hooked scoring of the select fold)")
    methods: list[SearchMethod] = Field(
        list(DEFAULT_METHODS),
        min_length=1,
        description="what a trial may apply (editor/methods/search/space.py; heads+residual_add: both at once; "
        "unlink_mlp only when named)",
    )
    contrasts: list[Literal["frames", "frames_identity", "templates", "negation", "introspective", "data"]] = Field(
        ["frames", "frames_identity", "templates", "negation", "introspective"],
        min_length=1,
        description="statement sets vectors are built from (editor/methods/search/contrasts.py; data: the file)",
    )
    sites: list[Literal["block", "attn", "mlp"]] = Field(
        ["block", "attn", "mlp"],
        min_length=1,
        description="residual_add sites: the stream after the block or after its attention, or the MLP's output",
    )
    layers: list[int] | None = Field(None, description="blocks a trial may use (null: 30% to 90% depth)")
    k_max: int = Field(12, ge=1, description="most heads a head removal takes out")
    identity_k_max: int = Field(4, ge=1, description="most group-identity directions ablate_identity projects out")
    erase_k: int = Field(4, ge=1, description="directions erase_identity fits (started from the identity subspace)")
    erase_steps: int = Field(
        40, ge=1, description="gradient steps of the erase_identity fit, once per search (~4 s each on 2 cores)"
    )
    erase_kl_weight: float = Field(
        20.0,
        gt=0,
        description="weight of KL from the base on WikiText-2 against the squared gap, in that fit and unlink_mlp's",
    )
    erase_prompts: Literal["templates", "templates+frames"] = Field(
        "templates", description="statements the erase_identity fit reads the gap in (frames: slower, see erasure.py)"
    )
    unlink_rank: int = Field(4, ge=1, description="rank of each MLP update unlink_mlp fits")
    unlink_layers: list[int] | None = Field(
        None, description="MLPs unlink_mlp updates (null: every second layer from two thirds of the depth)"
    )
    unlink_steps: int = Field(
        100, ge=1, description="gradient steps of the unlink_mlp fit, once per search (~4.4 s each on 2 cores)"
    )
    unlink_learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate in the unlink_mlp fit")
    removals: list[Literal["zero", "mean", "scale"]] = Field(
        ["zero", "mean", "scale"], min_length=1, description="how removed heads are taken out"
    )
    damage_budget: float = Field(0.02, gt=0, description="largest allowed relative WikiText-2 perplexity increase")
    kl_budget: float = Field(0.05, gt=0, description="largest allowed first-token KL on neutral prompts")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="Optuna sampler (TPE suits a few dozen trials)")
    seed: int = Field(0, description="seed of the sampler and of every draw of items")
    statements: int = Field(150, ge=10, description="build-fold pairs per contrast (two statements each)")
    head_pairs: int = Field(96, ge=8, description="build-fold pairs the head scores are averaged over")
    select_pairs: int = Field(40, ge=5, description="select-fold pairs for the association gap a trial is scored on")
    select_items: int = Field(64, ge=8, description="select-fold sentence frames a trial is scored on")
    test_pairs: int = Field(120, ge=5, description="test-fold pairs for the held-out report (never searched on)")
    test_items: int = Field(96, ge=8, description="test-fold sentence frames for the held-out report")
    wiki_tokens: int = Field(2048, ge=64, description="WikiText-2 tokens a trial's perplexity is measured on")
    generic_tokens: int = Field(4096, ge=64, description="further WikiText-2 tokens for whitening and head means")
    report_tokens: int = Field(
        4096, ge=64, description="WikiText-2 tokens, unseen by the search, for the chosen plan's reported perplexity"
    )
    data: str | None = Field(
        None, description="labelled JSONL/CSV (text, label 1=biased/0=neutral) for the 'data' contrast"
    )
    report_methods: bool = Field(
        False,
        description="also measure every method's best trial like the chosen plan (build and test folds; ~2 min each)",
    )
    seegull: str | None = Field(
        None, description="SeeGULL CSV (null: $EDITOR_DATA, else the copy shipped in the package)"
    )
    wikitext: str | None = Field(
        None, description="WikiText-2 test text (null: $EDITOR_DATA, else the copy shipped in the package)"
    )

    @model_validator(mode="after")
    def _data_contrast_has_a_file(self) -> SearchSettings:
        if "data" in self.contrasts and not self.data:
            raise ValueError("the 'data' contrast reads the file given as 'data' (a labelled JSONL or CSV); give one")
        return self
