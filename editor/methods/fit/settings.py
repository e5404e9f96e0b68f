"""The fits' settings: one typed section per fit, read by `wedit fit`, by the recipe's ``fit`` section and by the
search (its ``erase_identity`` and ``unlink_mlp`` sections), so one fit means the same thing everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from editor.core.settings import Settings
from editor.methods.inputs import HeldOutData

if TYPE_CHECKING:  # the loop imports torch; every `wedit` command reads these settings to build its flags
    from editor.methods.fit.loop import FitLoop

FIT_METHODS = ("erase_identity", "unlink_mlp")
FitPrompts = Literal["templates", "templates+frames"]
UnlinkSite = Literal["mlp", "attn"]  # the output projections unlink_mlp updates, in the order its plan lists them
UNLINK_SITES: tuple[UnlinkSite, ...] = ("mlp", "attn")


class FitMethodSettings(Settings):
    """What every fit has: a loop of Adam steps on its objective, under a KL penalty on ordinary text."""

    steps: int
    learning_rate: float
    prompts: FitPrompts
    kl_weight: float = Field(20.0, gt=0, description="weight of KL from the base on WikiText-2 against the objective")
    objective: Literal["gap", "counterfactual"] = Field(
        "gap",
        description="gap: the squared SeeGULL association gap in the statements; counterfactual: the divergence "
        "between what follows a mention of one build-fold group or another (fit/counterfactual.py)",
    )
    contexts: int = Field(
        160, ge=0, description="counterfactual: the base model's continuations of prompts about groups, made once"
    )
    variants: int = Field(3, ge=2, description="counterfactual: groups put in each mention per step")
    objective_weight: float = Field(
        1.0, gt=0, description="the objective's weight against the KL (the divergence is small: about 0.05 nats)"
    )
    choice_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the choice objective beside the main one (0: off): asked which of two people of "
        "build-fold groups has a trait, the log-odds should not depend on the trait (fit/choice.py)",
    )
    choice_scenes: int = Field(6, ge=1, description="choice objective: scenes per step, each asked about 3 traits")
    association_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the association objective beside the main one (0: off): a build-fold stereotype "
        "should be no likelier after its group is named (as adjective, plural, phrase or country) than after "
        "unlinked groups of the axis (fit/association.py)",
    )
    association_pairs: int = Field(12, ge=1, description="association objective: stereotypes per step")
    sentence_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the association objective read over the whole sentence (0: off): every word after "
        "the mention, the stereotype among them, as a minimal pair reads it, should be no likelier after a "
        "stereotyped group's name than after unlinked groups' (fit/association.py, span sentence)",
    )
    sentence_pairs: int = Field(8, ge=1, description="sentence association: stereotypes per step")

    def objective_for(self, inputs, seed: int):
        """The objective the loop lowers (None: the squared gap, the loop's own), with the association and choice
        objectives beside it when their weights are above 0."""
        main = None
        if self.objective == "counterfactual":
            from editor.methods.fit.counterfactual import counterfactual_objective

            main = counterfactual_objective(
                inputs,
                self.prompts,
                generated=self.contexts,
                seed=seed,
                variants=self.variants,
                weight=self.objective_weight,
            )
        if not (self.choice_weight or self.association_weight or self.sentence_weight):
            return main
        from editor.methods.fit.association import association_objective
        from editor.methods.fit.choice import SummedObjective, choice_objective
        from editor.methods.fit.loop import GapObjective

        parts = [main if main is not None else GapObjective(inputs, self.loop(seed, False), "fit")]
        if self.association_weight:
            parts.append(association_objective(inputs, batch=self.association_pairs, weight=self.association_weight))
        if self.sentence_weight:
            parts.append(
                association_objective(inputs, batch=self.sentence_pairs, weight=self.sentence_weight, span="sentence")
            )
        if self.choice_weight:
            parts.append(choice_objective(inputs, batch=self.choice_scenes, weight=self.choice_weight))
        return SummedObjective(*parts)

    def loop(self, seed: int, progress: bool) -> FitLoop:
        from editor.methods.fit.loop import FitLoop

        return FitLoop(
            steps=self.steps,
            kl_weight=self.kl_weight,
            learning_rate=self.learning_rate,
            prompts=self.prompts,
            seed=seed,
            progress=progress,
        )


class EraseIdentitySettings(FitMethodSettings):
    """Group-identity directions fitted to the objective, projected out of every residual write."""

    k: int = Field(4, ge=1, description="directions the fit trains (started from the closed-form identity subspace)")
    steps: int = Field(40, ge=1, description="gradient steps of the fit (~4 s each on 2 cores for SmolLM2)")
    learning_rate: float = Field(3e-3, gt=0, description="Adam's learning rate")
    prompts: FitPrompts = Field(
        "templates", description="statements the gap is read in (templates+frames: slower, see fit/erasure.py)"
    )
    start_layer: int | None = Field(
        None, description="block whose identity subspace starts the fit (null: the searched block nearest 83% depth)"
    )


class UnlinkMlpSettings(FitMethodSettings):
    """Low-rank updates of late MLP (and, with ``sites``, attention) output projections fitted to the objective."""

    rank: int = Field(4, ge=1, description="rank of each MLP update")
    layers: list[int] | None = Field(
        None, description="blocks to update (null: every second layer from two thirds of the depth)"
    )
    sites: list[UnlinkSite] = Field(
        ["mlp"],
        min_length=1,
        description="output projections updated in each of those blocks: mlp (the MLP's down projection), attn "
        "(attention's W_O, which carries what follows a mention from the mention)",
    )
    steps: int = Field(100, ge=1, description="gradient steps of the fit (~4.4 s each on 2 cores for SmolLM2)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate")
    prompts: FitPrompts = Field("templates+frames", description="statements the gap is read in")


class FitSettings(HeldOutData):
    """One trained fit on the build fold, its plan at a chosen scale, and its held-out report."""

    method: Literal["erase_identity", "unlink_mlp"] = Field(
        "unlink_mlp", description="which fit (editor/methods/fit/: erasure.py, unlink.py)"
    )
    scale: float = Field(1.0, gt=0, description="the plan's scale of the fitted edits (1: as fitted)")
    held_out_report: bool = Field(
        True,
        description="after the fit, measure base and plan on the build and test folds (false: skip it, e.g. in a "
        "recipe whose eval stage measures the same folds; about 2.5 min on 2 cores for SmolLM2)",
    )
    erase_identity: EraseIdentitySettings = Field(
        default_factory=EraseIdentitySettings, description="erase_identity's settings"
    )
    unlink_mlp: UnlinkMlpSettings = Field(default_factory=UnlinkMlpSettings, description="unlink_mlp's settings")

    def method_settings(self) -> EraseIdentitySettings | UnlinkMlpSettings:
        return self.erase_identity if self.method == "erase_identity" else self.unlink_mlp
