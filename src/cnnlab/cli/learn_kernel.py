"""`cnnlab learn-kernel --kernel NAME`: recover a kernel from a photo and its filtered copy by gradient descent."""

from __future__ import annotations

import argparse
import re


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "learn-kernel",
        help="train one conv layer to recover a known kernel from input/output images",
        description="Filter a photo with a known kernel (the targets), then train a single conv layer,\n"
        "starting from zeros, by gradient descent on the mean squared error until its output\n"
        "matches the targets. Prints the loss as it falls and the learned kernel beside the true\n"
        "one, and saves a figure. Add --noise to see how noisy targets blur the answer.",
        epilog="examples:\n"
        "  cnnlab learn-kernel --kernel sobel_x\n"
        "  cnnlab learn-kernel --kernel gaussian:n=5,sigma=1 --noise 0.01 --out gauss.png\n"
        "  cnnlab learn-kernel --kernel edge --image photo.png",
    )
    p.add_argument("-k", "--kernel", required=True, metavar="NAME[:key=value,...]",
                   help="the kernel to recover, from `cnnlab kernels --list`, e.g. sobel_x or gaussian:n=5,sigma=1")
    p.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="add Gaussian noise with this standard deviation to the targets (default: 0)")
    p.add_argument("--image", help="a PNG or JPEG file to learn from (default: scikit-learn's china.jpg)")
    p.add_argument("--size", type=int, default=64,
                   help="shrink the photo (in gray) so its longer side is SIZE pixels (default: 64)")
    p.add_argument("--steps", type=int, default=2000, help="gradient-descent steps at most (default: 2000)")
    p.add_argument("--lr", type=float, help="learning rate (default: 1 / trace of the loss's Hessian, "
                   "a step small enough never to diverge)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("-o", "--out", metavar="FILE", help="where to save the figure "
                   "(default: cnnlab-figures/learned-kernel-<name>.png)")
    p.set_defaults(func=run)


def _side_by_side(true, learned) -> str:
    width = 8
    cols = true.shape[1]
    head = "true".ljust(cols * width) + "   " + "learned"
    lines = [head]
    for t_row, l_row in zip(true.tolist(), learned.tolist()):
        left = "".join(f"{v:{width}.4f}" for v in t_row)
        right = "".join(f"{v:{width}.4f}" for v in l_row)
        lines.append(f"{left}   {right}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from cnnlab.conv import conv2d, learn_kernel
    from cnnlab.conv.images import load_image, sample_image
    from cnnlab.conv.kernels import parse_kernel
    from cnnlab.errors import CnnlabError
    from cnnlab.viz.conv import learned_kernel_figure
    from cnnlab.viz.style import FIGURES_DIR, save_figure

    if args.noise < 0:
        raise CnnlabError(f"--noise is a standard deviation and must be >= 0, got {args.noise}")
    if args.size < 4:
        raise CnnlabError(f"--size must be at least 4 pixels, got {args.size}")
    if args.lr is not None and args.lr <= 0:
        raise CnnlabError(f"--lr must be positive, got {args.lr}")
    name, true = parse_kernel(args.kernel)
    if args.image:
        image, title = load_image(args.image, gray=True, size=args.size), Path(args.image).name
    else:
        image, title = sample_image("china.jpg", gray=True, size=args.size), "china.jpg (scikit-learn)"
    x = image[0]
    kh, kw = true.shape
    if kh > x.shape[0] or kw > x.shape[1]:
        raise CnnlabError(f"the {kh}x{kw} kernel does not fit the {x.shape[0]}x{x.shape[1]} image: raise --size")
    targets = conv2d(x[None, None], true[None, None])[0, 0]
    if args.noise:
        g = torch.Generator().manual_seed(args.seed)
        targets = targets + args.noise * torch.randn(targets.shape, generator=g)
    print(f"learning {name} ({kh}x{kw}) from {title}, {x.shape[0]}x{x.shape[1]} gray, noise sigma {args.noise:g}")
    result = learn_kernel(x, targets, (kh, kw), steps=args.steps, lr=args.lr)
    print(f"learning rate {result.lr:.4g}, {result.steps} steps")
    marks = sorted({0, *range(0, result.steps, max(1, result.steps // 8)), result.steps - 1})
    for i in marks:
        print(f"  step {i:5d}  loss {result.losses[i]:.3e}")
    print()
    print(_side_by_side(true, result.kernel))
    error = (result.kernel - true).abs().max().item()
    print(f"\nmax |learned - true| = {error:.2e}")
    fig = learned_kernel_figure(x, targets, true, result.kernel, result.losses, name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    path = save_figure(fig, args.out or FIGURES_DIR / f"learned-kernel-{slug}.png")
    print(f"wrote {path}")
    return 0
