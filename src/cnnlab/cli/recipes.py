"""`cnnlab recipes`: the named training presets and what each is expected to reach."""

from __future__ import annotations

import argparse
import json
import textwrap


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list named training presets with their expected results",
                       description="List the presets for `cnnlab train --recipe NAME`, their settings and the "
                       "result each is expected to reach.")
    p.add_argument("name", nargs="?", help="show one recipe's settings in full")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.train.recipes import get_recipe, list_recipes

    recipes = [get_recipe(args.name)] if args.name else list_recipes()
    if args.json:
        print(json.dumps([vars(r) for r in recipes], indent=2))
        return 0
    for r in recipes:
        print(f"{r.name}\n" + textwrap.indent(textwrap.fill(r.description, 96), "    "))
        print(f"    expected: {r.expected}")
        if args.name:
            for k, v in r.settings.items():
                print(f"    --{k.replace('_', '-')} {json.dumps(v) if isinstance(v, dict) else v}")
        print()
    if not args.name:
        print("use: cnnlab train --recipe NAME [options that override it]")
    return 0
