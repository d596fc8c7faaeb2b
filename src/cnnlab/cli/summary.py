"""`cnnlab summary MODEL`: the layer table with shapes, parameters and worked output-size formulas."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="layer table with shapes and the output-size formula worked out",
        description="Print one row per layer: input -> output shape, parameters, and for conv and pool "
        "layers the output-size formula floor((n + 2p - d(k-1) - 1) / s) + 1 with its own numbers. Sizes are "
        "channels first (CxHxW), as in torch.",
        epilog="examples:\n  cnnlab summary lenet\n  cnnlab summary lenet --input-size 3x32x32\n"
        "  cnnlab summary lenet --input-size 1x32x32 --fixed   # where and why the model built for 28x28 breaks\n"
        "  cnnlab summary resnet18 --num-classes 2 --json",
    )
    p.add_argument("model", help="a model name from `cnnlab models`")
    p.add_argument("--input-size", dest="input", metavar="CxHxW",
                   help="input size, channels first, e.g. 1x28x28 (default: the model's own)")
    p.add_argument("--input", dest="input", help=argparse.SUPPRESS)  # the name before --input-size, still accepted
    p.add_argument("--num-classes", type=int, help="number of outputs (default: the model's own)")
    p.add_argument(
        "--fixed",
        action="store_true",
        help="build the model at its default size and feed --input as is, to see where it breaks",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.inspect.summary import ShapeMismatchError, summary
    from cnnlab.models import get_model, get_model_info, parse_input_size, resolve_input_size

    info = get_model_info(args.model)
    requested = parse_input_size(args.input) if args.input else None
    feed = resolve_input_size(info, None, requested)
    model = get_model(args.model, num_classes=args.num_classes, input_size=None if args.fixed else requested)
    try:
        result = summary(model, feed)
    except ShapeMismatchError as exc:
        print(exc)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{args.model}  (input {'x'.join(map(str, feed))})", file=sys.stdout)
        print(result)
    return 0
