"""`wedit attribute`: BiasScope, the heads that carry a bias, and a plan that removes them within a damage budget."""

from __future__ import annotations

import argparse

from editor.cli.common import add_model, add_output, add_threads, analysis_run
from editor.core.settings import add_flags, from_flags
from editor.methods.attribute.settings import AttributeSettings


def register(p: argparse.ArgumentParser) -> None:
    add_model(p, help="model source (the base, or an injected model with --token)")
    p.add_argument("--bias", required=True, help="preset name(s), comma-separated for a union of heads")
    add_flags(p, AttributeSettings, group="BiasScope settings (the recipe's attribute section)")
    add_output(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.data.biases import get_preset
    from editor.errors import EditorError
    from editor.methods.attribute.outputs import describe_choice, describe_experts, save_attribution
    from editor.methods.attribute.pipeline import PromptEncoder, attribute_biases

    settings = from_flags(AttributeSettings, args)
    presets = [get_preset(name) for name in args.bias.split(",")]
    if settings.pairs and len(presets) > 1:
        raise EditorError("--pairs holds the questions of one bias; run one bias per pairs file")

    def work(model, tokenizer, info, tmp):
        results = attribute_biases(model, info, PromptEncoder(tokenizer), presets, settings, tmp)
        variant = "injection" if settings.token else "original"
        return results, save_attribution(results, tmp, model=args.model, variant=variant, settings=settings)

    results, union = analysis_run(args, work)
    for r in results:
        print(describe_choice(r))
        if line := describe_experts(r):
            print(line)
    print(f"wrote {args.out}: plan.json ({len(union)} heads), heatmaps, k curves, pairs")
    return 0
