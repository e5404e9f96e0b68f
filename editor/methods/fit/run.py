"""`wedit fit`: one trained fit on the build fold, its plan, and the base beside the fitted model on held-out data.

The fit reads the build fold and the WikiText-2 tokens a search would read (``methods.inputs``), so it gives the
edits a search's fit of the same settings gives. Only after it is the held-out report measured: the base and the
plan (hooked) on the build and test folds, perplexity on tokens no fit read, first-token KL, concept retention.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from editor.core.hooks import hooked
from editor.core.model_info import ModelInfo
from editor.core.plan import Plan
from editor.edits import Edit
from editor.evaluation.heldout import Measured, comparison_lines, measure
from editor.evaluation.metrics import last_token_logprobs
from editor.io.atomic import write_text
from editor.methods.fit.erasure import ErasureFit, erase_start_layer, fit_erasure, start_basis
from editor.methods.fit.loop import FitInputs
from editor.methods.fit.settings import EraseIdentitySettings, FitSettings
from editor.methods.fit.unlink import UnlinkFit, fit_unlink
from editor.methods.inputs import build_fold, default_layers, report_yardstick, text_budget


@dataclass
class FitReport:
    method: str
    scale: float
    edits: int
    losses: list[float]
    fit_seconds: float
    base: Measured | None  # None: the held-out report was skipped (FitSettings.held_out_report)
    fitted: Measured | None
    seconds: float = 0.0


def fit(inputs: FitInputs, settings: FitSettings, *, progress: bool = True) -> ErasureFit | UnlinkFit:
    """The fit ``settings.method`` names, at its section's settings."""
    section = settings.method_settings()
    loop = section.loop(settings.seed, progress)
    if isinstance(section, EraseIdentitySettings):
        info = inputs.info
        start = section.start_layer
        if start is None:
            start = erase_start_layer(default_layers(info), info.num_layers)
        info.check_layer(start, "erase_identity.start_layer")
        basis = start_basis(inputs, start, section.k)
        return fit_erasure(inputs, basis, loop, section.objective_for(inputs, settings.seed))
    objective = section.objective_for(inputs, settings.seed)
    return fit_unlink(inputs, loop, layers=section.layers, rank=section.rank, objective=objective, sites=section.sites)


def run_fit(model, tokenizer, info: ModelInfo, out: Path, settings: FitSettings, *, progress: bool = True) -> FitReport:
    """Fit, write ``plan.json``, measure base and plan on held-out data (unless ``held_out_report`` is false);
    write ``fit.json`` and ``losses.png``."""
    started = time.monotonic()
    all_pairs, build = build_fold(settings)
    text = text_budget(tokenizer, settings)
    result = fit(FitInputs(model, tokenizer, info, all_pairs, build, text.generic), settings, progress=progress)
    fit_seconds = time.monotonic() - started
    edits: list[Edit] = list(result.edits(settings.scale))
    write_text(out / "plan.json", Plan(edits=edits).to_json() + "\n")
    base = fitted = None
    if settings.held_out_report:
        yard = report_yardstick(all_pairs, settings)
        base_lp = last_token_logprobs(model, tokenizer)
        base = measure(model, tokenizer, yard, text.report, base_lp)
        with hooked(model, edits, info):
            fitted = measure(model, tokenizer, yard, text.report, base_lp)
    report = FitReport(settings.method, settings.scale, len(edits), result.losses, fit_seconds, base, fitted)
    report.seconds = time.monotonic() - started
    write_text(out / "fit.json", json.dumps({**asdict(report), "settings": settings.model_dump()}, indent=1) + "\n")
    loss_figure(report, out / "losses.png")
    return report


def summary_lines(report: FitReport) -> list[str]:
    return [
        f"{report.method}: fitted in {report.fit_seconds / 60:.1f} min ({len(report.losses)} steps, loss "
        f"{report.losses[0]:.3f} -> {report.losses[-1]:.3f}); {report.edits} edits at scale {report.scale:g}",
        *(
            comparison_lines(report.base, report.fitted)
            if report.base and report.fitted
            else ["held-out report skipped (held_out_report: false)"]
        ),
    ]


def loss_figure(report: FitReport, path: Path) -> None:
    from editor.io.figures import line_plot

    line_plot(
        list(range(1, len(report.losses) + 1)),
        report.losses,
        path,
        xlabel="step",
        ylabel="squared gap + weighted KL (the step's batch)",
        title=f"{report.method} fit",
    )
