"""What a search method is: one registered object that turns an Optuna trial into a plan.

A method declares its name, a one-line summary, its typed settings section (or none) and whether a search tries
it when the user names no methods. ``prepare(context)`` runs once per search, before any trial (a fit, a vector,
a ranking: whatever its trials read), and returns the method's state; ``suggest(trial, state)`` asks the trial
for this method's parameters and returns the plan; ``describe(params)`` puts a trial's parameters in words;
``seeds(context)`` lists known-good parameter sets Optuna runs before its sampler proposes any.

Every parameter has its own name across methods (``add_alpha``, ``edit_alpha``, ...), so no name means two
ranges, and a plan is rebuilt from a trial's recorded parameters with ``optuna.trial.FixedTrial``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from editor.core.settings import Settings
from editor.edits import Edit

if TYPE_CHECKING:
    from editor.methods.search.context import SearchContext

# A trial's strength parameters in words: name -> label ("a=0.5").
STRENGTH_WORDS = (
    ("add_alpha", "a"),
    ("edit_alpha", "a"),
    ("ridge", "ridge"),
    ("ablation_strength", "s"),
    ("erase_scale", "x"),
    ("unlink_scale", "x"),
)


class SearchMethod(ABC):
    """Base of every search method (see the module docstring); ``settings`` is the method's recipe section."""

    name: ClassVar[str]
    summary: ClassVar[str]
    settings_type: ClassVar[type[Settings] | None] = None
    searched_by_default: ClassVar[bool] = True

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def prepare(self, context: SearchContext) -> Any:
        """Work done once per search for this method's trials; the result is ``suggest``'s ``state``."""
        return context

    @abstractmethod
    def suggest(self, trial, state: Any) -> list[Edit]:
        """The plan of one trial (``trial``: an optuna Trial, or a FixedTrial replaying recorded parameters)."""

    def describe(self, params: dict[str, Any]) -> list[str]:
        """A trial's parameters in words, after the method's name: where it acts, then its strengths."""
        return where_words(params) + strength_words(params)

    def seeds(self, context: SearchContext) -> list[dict[str, Any]]:
        """Parameter sets (without "method") Optuna runs first, before its sampler proposes any."""
        return []


def where_words(params: dict[str, Any]) -> list[str]:
    """ "L12 mlp frames": the block, site and contrast of a trial, those it has."""
    words = []
    if "layer" in params:
        words.append(f"L{params['layer']}")
    if "site" in params:
        words.append(params["site"])
    if "contrast" in params:
        words.append(params["contrast"])
    return words


def strength_words(params: dict[str, Any]) -> list[str]:
    return [f"{label}={params[key]:.3g}" for key, label in STRENGTH_WORDS if key in params]
