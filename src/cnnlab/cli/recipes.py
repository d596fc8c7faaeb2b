"""`cnnlab recipes`: the named training presets, and each one's settings as flags you can paste."""

from __future__ import annotations

import argparse
import json
import textwrap

RESULTS = ("what each reaches, measured (accuracy and time): the documentation's Recipes page, \"What they reach\" "
           "(docs/recipes.md; benchmarks/README.md for the speed recipes)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list named training presets",
                       description="List the presets for `cnnlab train --recipe NAME` and what each is; with a name, "
                       "its settings as `cnnlab train` flags. What each reaches, measured, is on the documentation's "
                       "Recipes page (docs/recipes.md; benchmarks/README.md for the speed recipes).",
                       epilog="examples:\n  cnnlab recipes\n  cnnlab recipes fast-mnist\n"
                       "  cnnlab train --recipe fast-mnist --seed 3",)
    p.add_argument("name", nargs="?", help="show one recipe's settings in full")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from cnnlab.training.launch import settings_to_argv
    from cnnlab.training.recipes import get_recipe, list_recipes

    recipes = [get_recipe(args.name)] if args.name else list_recipes()
    if args.json:
        print(json.dumps([vars(r) for r in recipes], indent=2))
        return 0
    for r in recipes:
        print(f"{r.name}\n" + textwrap.indent(textwrap.fill(r.description, 96), "    "))
        if args.name:  # the same run spelled out: flags that paste into a shell
            print("\n    cnnlab train " + " \\\n        ".join(shlex.quote(a) for a in settings_to_argv(r.settings)))
        print()
    if not args.name:
        print("use: cnnlab train --recipe NAME [options that override it]")
        print(RESULTS)
    return 0
