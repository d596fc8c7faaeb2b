"""Entry point of the `cnnlab` command: builds the parser from the command modules and runs one."""

from __future__ import annotations

import argparse
import atexit
import difflib
import gc
import importlib
import os
import re
import sys
from typing import NoReturn

from cnnlab import __version__
from cnnlab.cli.tuning import tune_malloc
from cnnlab.errors import CnnlabError

# One module per command, in the order `cnnlab --help` lists them.
COMMAND_MODULES = [
    # build and train
    "models",
    "datasets",
    "recipes",
    "train",
    "lr_find",
    "eval",
    "predict",
    "runs",
    "compare",
    # look inside and ship
    "summary",
    "explain",
    "report",
    "export",
    "serve",
    # learn the math
    "kernels",
    "conv_size",
    "learn_kernel",
    "lessons",
]


class Formatter(argparse.HelpFormatter):
    """Help text wrapped to the terminal, except text written in lines (the examples, a formula): kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error told in one line and a pointer to the command's own help (not its whole usage,
    25 lines for `cnnlab train`); a mistyped choice gets the closest ones. Subparsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}{did_you_mean(message)}\n"
                     f"`{self.prog} --help` lists "
                     f"{'the commands' if self.prog == 'cnnlab' else 'its options, with examples'}\n")


def did_you_mean(message: str) -> str:
    """' Did you mean: X?' for argparse's "invalid choice: 'x' (choose from ...)" when a choice is close."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    choices = [c.strip(" '") for c in found.group(2).split(",")]
    close = difflib.get_close_matches(found.group(1), choices, n=3, cutoff=0.6)
    return f". Did you mean: {', '.join(close)}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command's subparser."""
    parser = Parser(
        prog="cnnlab",
        description="Convolutional neural networks for image classification: "
        "learn the math, train, inspect and ship.",
        epilog="Run `cnnlab COMMAND --help` for a command's options and examples.\n\nexamples:\n"
        "  cnnlab train                      # a small CNN chosen from the data, on the bundled digits\n"
        "  cnnlab eval last                  # the newest run: metrics, confusion matrix, mistakes\n"
        "  cnnlab predict last my_digit.png\n  cnnlab runs --sort acc            # every run, best first\n"
        "  cnnlab summary lenet --input-size 1x32x32",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cnnlab.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the command, and turn known errors into one clear line and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnlab models | head` closed the pipe: not an error
        return 0


def entry() -> NoReturn:
    """The `cnnlab` process: tuned for the one command it runs (the library itself tunes nothing; figures from
    `cnnlab train --recipe fast-mnist`, paired runs, in benchmarks/README.md), then left without teardown."""
    tune_malloc()  # a step's freed buffers stay in the heap: 0.92x wall, system time 2.5 -> 0.8 s, +40 MiB peak
    # The imports of torch and torch._dynamo create ~550,000 objects that live until exit: cyclic collections
    # 100x rarer stop walking them again and again (0.92x wall, user time 19.2 -> 17.2 s).
    gc.set_threshold(100_000, 50, 100)
    code = main()
    fast_exit(code)  # no interpreter teardown: 0.92x wall, peak memory 1,052 -> 939 MiB


def fast_exit(code: int) -> NoReturn:
    """Leave at once: every file is written (atomically) and closed by now, and Python's teardown of torch's
    objects costs time and memory for nothing."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        atexit._run_exitfuncs()  # what a normal exit runs first: logging, multiprocessing, torch's handlers
    # (A torchrun worker skips them too: gloo's background threads were seen to abort it with SIGABRT there.)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader has gone (`cnnlab models | head`) or it is closed
            pass
    os._exit(code)
