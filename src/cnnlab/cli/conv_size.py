"""`cnnlab conv-size N -k K`: the output size of a conv or pool layer, with the formula worked out."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "conv-size",
        help="output size of conv/pool layers, with the formula worked out",
        description="How many positions a kernel fits into an input of size N (height or width):\n"
        "  out = floor((n + 2p - d(k-1) - 1) / s) + 1\n"
        "for kernel k, stride s, padding p, dilation d. Pooling layers use the same formula (d = 1).\n"
        "Give one layer with -k/-s/-p/-d, or a chain of layers with --chain, each feeding the next.",
        epilog="examples:\n"
        "  cnnlab conv-size 227 -k 11 -s 4          # AlexNet's first layer: 55\n"
        "  cnnlab conv-size 28 -k 5 -p 2            # 'same' padding keeps 28\n"
        "  cnnlab conv-size 227 --chain conv1:k=11,s=4 pool1:k=3,s=2 conv2:k=5,p=2 pool2:k=3,s=2",
    )
    p.add_argument("n", type=int, help="input height or width in pixels")
    p.add_argument("-k", "--kernel", type=int, help="kernel size k")
    p.add_argument("-s", "--stride", type=int, default=1, help="stride s (default: 1)")
    p.add_argument("-p", "--padding", type=int, default=0, help="padding p on each side (default: 0)")
    p.add_argument("-d", "--dilation", type=int, default=1, help="dilation d (default: 1)")
    p.add_argument(
        "--chain",
        nargs="+",
        metavar="[NAME:]k=K,s=S,p=P,d=D",
        help="several layers in order, e.g. conv1:k=11,s=4 pool1:k=3,s=2 (s, p, d default to 1, 0, 1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.conv.sizes import explain_output_size, explain_output_sizes
    from cnnlab.errors import CnnlabError

    if args.chain and args.kernel is not None:
        raise CnnlabError("give either one layer (-k K [-s S -p P -d D]) or --chain, not both")
    if args.chain:
        print(explain_output_sizes(args.n, args.chain))
        return 0
    if args.kernel is None:
        raise CnnlabError("give the kernel size with -k K (or several layers with --chain)")
    print(explain_output_size(args.n, args.kernel, args.padding, args.stride, args.dilation))
    return 0
