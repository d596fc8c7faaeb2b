"""`cnnlab models [PATTERN]`: the model zoo as a table."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the model zoo",
        description="List registered models with their parameters, input size and description.",
        epilog="examples:\n  cnnlab models\n  cnnlab models 'resnet*' --source\n  cnnlab models --json",
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lenet*' (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--source", action="store_true", help="add a column saying where each model comes from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.models import count_parameters, get_model, get_model_info, list_models
    from cnnlab.text import format_table, human_count, shape_text

    names = list_models(args.pattern)
    records = []
    for name in names:
        info = get_model_info(name)
        # Built to be counted: our own models are small; torchvision's carry their count (building them would
        # import torchvision, and on the meta device BatchNorm imports torch._dynamo: a second or more each time).
        params = info.params if info.params is not None else count_parameters(get_model(name))
        records.append(
            {
                "name": name,
                "params": params,
                "input_size": list(info.input_size),
                "num_classes": info.num_classes,
                "description": info.description,
                "source": info.source,
            }
        )
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(f"no model matches {args.pattern!r}; run `cnnlab models` for the full list")
        return 1
    headers = ["name", "params", "input", "classes", "description"] + (["source"] if args.source else [])
    rows = [
        [r["name"], human_count(r["params"]), shape_text(r["input_size"]), r["num_classes"], r["description"]]
        + ([r["source"]] if args.source else [])
        for r in records
    ]
    print(format_table(headers, rows, align="lrlrl" + "l" * args.source))
    return 0
