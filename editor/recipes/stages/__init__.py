"""The stages of `wedit run`, in order. Each module has NAME, READS (earlier stages whose results it uses),
``settings(ctx)`` (the stage's cache key material, or None when the recipe leaves the stage out),
``run(ctx, out)`` (does the work into ``out``, returns a small JSON-able result), ``numbers(result)``
(the summary line) and optionally ``valid(result)`` (whether a cached result's outputs still exist)."""

from __future__ import annotations

from editor.recipes.stages import (
    attribute,
    card,
    eval,
    export,
    fit,
    gguf,
    inject,
    plan,
    search,
    source,
    steer,
    verify,
)

STAGES = (source, inject, attribute, steer, fit, search, plan, export, verify, eval, gguf, card)
