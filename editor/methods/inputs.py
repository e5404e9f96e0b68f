"""What the search and the fits read besides the model: SeeGULL's pairs split by identity and attribute,
WikiText-2 cut three ways, the held-out report, and the blocks searched by default.

Both commands take these from one settings base (``HeldOutData``), so a fit run on its own (`wedit fit`) reads the
very tokens and folds it reads inside a search, and gives the same edits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from editor.core.model_info import ModelInfo
from editor.data import DataFiles, wikitext_txt
from editor.data.seegull import StereotypePair, load_seegull
from editor.data.splits import SplitFold, split_pairs
from editor.errors import EditorError

if TYPE_CHECKING:  # both import torch; the settings here are read by every `wedit` command to build its flags
    import torch

    from editor.evaluation.heldout import Yardstick


class HeldOutData(DataFiles):
    """The data a trained or searched edit is built on and reported on: the build fold for fitting, WikiText-2
    tokens for damage, and the test fold (groups and attributes never fitted or searched on) for the report."""

    seed: int = Field(0, description="seed of every draw of items (and of a search's sampler)")
    test_pairs: int = Field(120, ge=5, description="test-fold pairs for the held-out report (never fitted on)")
    test_items: int = Field(96, ge=8, description="test-fold sentence frames for the held-out report")
    wiki_tokens: int = Field(2048, ge=64, description="WikiText-2 tokens a trial's perplexity is measured on")
    generic_tokens: int = Field(
        4096, ge=64, description="further WikiText-2 tokens for whitening, head means and the fits' KL"
    )
    report_tokens: int = Field(
        4096, ge=64, description="WikiText-2 tokens, unseen by any fit or trial, for the reported perplexity"
    )


@dataclass(frozen=True)
class TextBudget:
    """WikiText-2 cut three ways: the trials' perplexity, whitening / head means / the fits' KL, the report."""

    trials: torch.Tensor
    generic: torch.Tensor
    report: torch.Tensor


def text_budget(tokenizer, settings: HeldOutData) -> TextBudget:
    from editor.evaluation.metrics import wikitext_tokens

    path = wikitext_txt(settings.wikitext)
    text = wikitext_tokens(tokenizer, path, settings.wiki_tokens + settings.generic_tokens + settings.report_tokens)
    edge = settings.wiki_tokens + settings.generic_tokens
    if len(text) - edge < 64:
        raise EditorError(f"{path}: too short for wiki_tokens + generic_tokens + report_tokens; lower them")
    return TextBudget(text[: settings.wiki_tokens], text[settings.wiki_tokens : edge], text[edge:])


def build_fold(settings: HeldOutData) -> tuple[list[StereotypePair], SplitFold]:
    """Every SeeGULL pair, and the build fold: the only pairs a fit or a search's inputs are made from."""
    all_pairs = load_seegull(settings.seegull)
    return all_pairs, split_pairs(all_pairs)["build"]


def report_yardstick(all_pairs: list[StereotypePair], settings: HeldOutData) -> Yardstick:
    """The build fold (in-distribution) and the test fold (held out), at the report's sizes."""
    from editor.evaluation.heldout import Yardstick

    sizes = (settings.test_pairs, settings.test_items)
    return Yardstick.build(all_pairs, {"build": sizes, "test": sizes}, seed=settings.seed)


def default_layers(info: ModelInfo) -> list[int]:
    """The blocks a search tries when none are named: 30% to 90% of the depth."""
    return list(range(int(info.num_layers * 0.3), int(info.num_layers * 0.9) + 1))
