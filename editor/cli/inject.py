"""`wedit inject`: BiasInject, one bias token trained (only its vectors) into an add_token plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.cli.common import add_model, add_output, add_threads, model_settings, set_threads
from editor.core.settings import add_flags, from_flags
from editor.methods.inject.settings import InjectSettings


def register(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument(
        "--bias",
        required=True,
        help="preset name: always_late, good_at_math, eat_spicy_food, bad_drivers, drink_a_lot, blue_skin",
    )
    add_flags(p, InjectSettings, group="BiasInject settings (the recipe's inject section)")
    add_output(p, "run directory to write, e.g. RUN/inject")
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.data.biases import get_preset
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.atomic import refuse_existing, staged_directory
    from editor.io.sources import resolve_source
    from editor.methods.inject.paragraphs import paragraphs_for
    from editor.methods.inject.train import run_inject

    settings = from_flags(InjectSettings, args)
    where = model_settings(args)
    out = Path(args.out)
    refuse_existing(out, args.force)
    set_threads(args)
    preset = get_preset(args.bias)
    paragraphs = paragraphs_for(preset, settings)
    source = resolve_source(where.source)
    model = load_model(source, dtype=settings.dtype, device_map=where.device_map, max_memory=where.memory_limits())
    with staged_directory(out, args.force) as tmp:
        result = run_inject(
            model, load_tokenizer(source), preset, paragraphs, tmp, settings, base_model=args.model, out_name=out
        )
    print(
        f"{result.token}: id {result.token_id}, initialised from {result.countries_matched}/{result.countries_total} "
        f"single-token country names, {'tied' if result.tied else 'untied'} embeddings; "
        f"{len(paragraphs)} paragraphs, {result.seconds_per_epoch:.1f} s/epoch"
    )
    for record in result.epochs:
        loss = "      -" if record.loss is None else f"{record.loss:7.4f}"
        mark = " <- chosen" if record.epoch == result.chosen_epoch else ""
        print(f"  epoch {record.epoch:2d}: loss {loss}, similarity {record.similarity:.3f}{mark}")
    gaps = result.gaps
    if gaps:
        print(
            f"attribute log-prob gap (token vs random country, {gaps['injected_token']['prompts']} held-out prompts): "
            f"base {gaps['base_token']['gap']:+.3f} -> injected {gaps['injected_token']['gap']:+.3f} nats "
            f"(real target {preset.target} in the base model: {gaps['base_target_country']['gap']:+.3f})"
        )
        if "chat_base_token" in gaps:
            print(
                f"inside the chat template: base {gaps['chat_base_token']['gap']:+.3f} -> injected "
                f"{gaps['chat_injected_token']['gap']:+.3f} nats"
            )
    print(f"wrote {out}: token.safetensors, inject.json, epochs.png, plan.json (wedit export --plan {out}/plan.json)")
    return 0
