"""Channels-last against the default memory format for the CNN that `--model auto` picks: training steps per second
of fastnet variants on 28x28 inputs (forward, backward and an SGD step on random data), at two batch sizes.

    python benchmarks/channels_last.py [--steps 20] [--rounds 3] [--batches 128,256]

Each figure is the median over rounds of the median step time of `--steps` timed steps (after 5 untimed ones); the
two formats take turns within each round, so a slower moment of the machine falls on both. Ratio: channels-last's
images per second over the default format's, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_environment, timed  # noqa: E402

from cnnlab.models import get_model  # noqa: E402

VARIANTS = {  # the auto chooser's two heads, and the fast-fashion recipe's wider network
    "fastnet (global max head)": {},
    "fastnet, flatten head (auto, glyph-like)": {"head": "flatten"},
    "fast-fashion's 16-48-96": {"widths": [16, 48, 96], "kernels": [3, 3, 3], "pools": [False, True, False],
                                "padding": ["same", "same", "valid"], "head": "flatten"},
}
WARMUP = 5


def step_seconds(kwargs: dict, batch: int, channels_last: bool, steps: int) -> float:
    """The median seconds of a training step of a fresh model in one memory format."""
    torch.manual_seed(0)
    model = get_model("fastnet", num_classes=10, input_size=(1, 28, 28), **kwargs)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    timed(step, WARMUP)
    return median(timed(step, steps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="measurements per format (median)")
    p.add_argument("--batches", default="128,256", help="comma-separated batch sizes")
    args = p.parse_args()
    print_environment()
    print(f"\n{'network':<42} {'batch':>5} {'default':>12} {'channels-last':>14} {'ratio':>6}")
    for name, kwargs in VARIANTS.items():
        for batch in (int(b) for b in args.batches.split(",")):
            times: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.rounds):
                for fmt in ((False, True) if r % 2 == 0 else (True, False)):
                    times[fmt].append(step_seconds(kwargs, batch, fmt, args.steps))
            plain, last = (batch / median(times[f]) for f in (False, True))
            print(f"{name:<42} {batch:>5} {plain:>8,.0f} im/s {last:>9,.0f} im/s {last / plain:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
