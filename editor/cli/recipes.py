"""`wedit recipes`: the built-in recipes, one line each."""

from __future__ import annotations

import argparse


def register(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor.recipes.schema import builtin_recipes, recipe_description

    recipes = builtin_recipes()
    width = max(len(name) for name in recipes)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {recipe_description(path)}")
    print("\nrun one with: wedit run NAME   (or wedit run path/to/recipe.yaml)")
    return 0
