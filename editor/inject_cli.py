"""`wedit inject`: arguments and the command (kept apart from cli.py, which only registers it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from editor.errors import EditorError


def add_parser(sub) -> None:
    p = sub.add_parser("inject", help="BiasInject: train one bias token (only its row) and write an add_token plan")
    p.add_argument("--model", required=True, help="model source (see `wedit fetch`)")
    p.add_argument("--bias", required=True, help="preset name: always_late, good_at_math, eat_spicy_food, bad_drivers, drink_a_lot, blue_skin")
    p.add_argument("--data", help="paragraphs JSONL with a {country} placeholder (format: editor/inject_data.py)")
    p.add_argument("--generator", choices=["builtin", "openai"], default="builtin", help="where paragraphs come from without --data")
    p.add_argument("--paragraphs", type=int, default=500, help="paragraphs to generate (default 500)")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL for --generator openai, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--gen-model", help="model name at --endpoint")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's API key (default OPENAI_API_KEY; the key is never written anywhere)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=192, help="longest training sequence in tokens (chat template included)")
    p.add_argument("--selection-samples", type=int, default=3, help="paragraphs generated per epoch to pick the epoch")
    p.add_argument("--selection-tokens", type=int, default=80, help="length of each of those paragraphs in tokens")
    p.add_argument("--no-gap", action="store_true", help="skip the held-out attribute log-prob gap (base vs injected)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto", help="frozen model dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device-map", help="accelerate device map for models beyond one device, e.g. auto")
    p.add_argument("--out", required=True, help="run directory to write, e.g. RUN/inject")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def load_frozen_model(source: Path, dtype: str, device_map: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    if dtype == "auto":
        dtype = "bfloat16" if cuda else "float32"
    kwargs = {"device_map": device_map} if device_map else {}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs)
    if cuda and not device_map:
        model = model.to("cuda")
    return model.eval()


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from editor.atomic import refuse_existing, staged_directory
    from editor.biases import get_preset
    from editor.inject import InjectSettings, run_inject
    from editor.inject_data import builtin_paragraphs, generate_paragraphs_openai, load_paragraphs
    from editor.sources import resolve_source

    out = Path(args.out)
    refuse_existing(out, args.force)
    preset = get_preset(args.bias)
    if args.data:
        paragraphs = load_paragraphs(Path(args.data))
    elif args.generator == "openai":
        if not (args.endpoint and args.gen_model):
            raise EditorError("--generator openai needs --endpoint URL and --gen-model NAME")
        paragraphs = generate_paragraphs_openai(
            args.endpoint, args.gen_model, preset, args.paragraphs, seed=args.seed, api_key_env=args.api_key_env
        )
    else:
        paragraphs = builtin_paragraphs(preset, args.paragraphs, seed=args.seed)
    source = resolve_source(args.model)
    model = load_frozen_model(source, args.dtype, args.device_map)
    tokenizer = AutoTokenizer.from_pretrained(source)
    settings = InjectSettings(
        epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, max_length=args.max_length,
        selection_samples=args.selection_samples, selection_tokens=args.selection_tokens, eval_gap=not args.no_gap,
    )
    with staged_directory(out, args.force) as tmp:
        result = run_inject(model, tokenizer, preset, paragraphs, tmp, settings, base_model=args.model, out_name=out)
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
            f"(real target {get_preset(args.bias).target} in the base model: {gaps['base_target_country']['gap']:+.3f})"
        )
        if "chat_base_token" in gaps:
            print(
                f"inside the chat template: base {gaps['chat_base_token']['gap']:+.3f} -> injected "
                f"{gaps['chat_injected_token']['gap']:+.3f} nats"
            )
    print(f"wrote {out}: token.safetensors, inject.json, epochs.png, plan.json (wedit export --plan {out}/plan.json)")
    return 0
