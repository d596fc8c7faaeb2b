"""`cnnlab kernels [IMAGE]`: named kernels on a photo, through conv -> ReLU -> 2x2 max pool, as one figure."""

from __future__ import annotations

import argparse

DEFAULT_KERNELS = ["sobel_x", "sobel_y", "laplacian"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kernels",
        help="filter a photo with named kernels: conv -> ReLU -> max pool, as a figure",
        description="Slide named kernels (edge detectors, blurs, sharpen...) over a photo and draw, for each\n"
        "kernel, the kernel with its numbers, the filtered image, the same after ReLU and after 2x2\n"
        "max pooling: the three steps of a conv block. Without IMAGE it uses china.jpg, a photo\n"
        "shipped with scikit-learn (nothing is downloaded).",
        epilog="examples:\n"
        "  cnnlab kernels --list\n"
        "  cnnlab kernels photo.png --kernel sobel_x --kernel laplacian --gray --out edges.png\n"
        "  cnnlab kernels --kernel gaussian:n=7,sigma=2 --kernel sharpen",
    )
    p.add_argument("image", nargs="?", help="a PNG or JPEG file (default: scikit-learn's china.jpg)")
    p.add_argument(
        "-k",
        "--kernel",
        action="append",
        metavar="NAME[:key=value,...]",
        help="a kernel from --list, with optional parameters, e.g. gaussian:n=7,sigma=2; repeat for more "
        f"(default: {', '.join(DEFAULT_KERNELS)})",
    )
    p.add_argument("--gray", action="store_true", help="convert the photo to gray first")
    p.add_argument(
        "--per-channel",
        action="store_true",
        help="filter each colour channel on its own (as an image editor does) instead of summing the three "
        "filtered channels into one map (as one output channel of a conv layer does)",
    )
    p.add_argument(
        "--activation",
        default="relu",
        choices=["relu", "leaky_relu", "sigmoid", "tanh"],
        help="the activation after the convolution (default: relu; leaky_relu uses slope 0.1)",
    )
    p.add_argument("--size", type=int, default=256, help="shrink the photo so its longer side is SIZE pixels "
                   "(default: 256; 0 keeps it as is)")
    p.add_argument("-o", "--out", metavar="FILE", help="where to save the figure (default: cnnlab-figures/kernels.png)")
    p.add_argument("--list", action="store_true", help="list the named kernels with their numbers and exit")
    p.set_defaults(func=run)


def _matrix(k) -> list[str]:
    integers = bool((k == k.round()).all())
    return ["  ".join(f"{int(v):3d}" if integers else f"{v:6.3f}" for v in row.tolist()) for row in k]


def list_text() -> str:
    """Every named kernel: name, parameters, what it does, and its numbers at the default parameters."""
    from cnnlab.conv.kernels import get_kernel, kernel_info, list_kernels

    blocks = []
    for name in list_kernels():
        info = kernel_info(name)
        params = ", ".join(f"{k}={v}" for k, v in info.params.items())
        head = f"{name}" + (f" ({params})" if params else "") + f": {info.description}"
        blocks.append("\n".join([head, *("    " + line for line in _matrix(get_kernel(name)))]))
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.conv.images import load_image, sample_image
    from cnnlab.conv.kernels import conv_activate_pool, parse_kernel
    from cnnlab.errors import CnnlabError
    from cnnlab.viz.conv import pipeline_figure
    from cnnlab.viz.style import FIGURES_DIR, save_figure

    if args.list:
        print(list_text())
        return 0
    if args.size < 0:
        raise CnnlabError(f"--size must be >= 0, got {args.size}")
    size = args.size or None
    if args.image:
        image = load_image(args.image, gray=args.gray, size=size)
        title = Path(args.image).name
    else:
        image = sample_image("china.jpg", gray=args.gray, size=size)
        title = "china.jpg (scikit-learn)"
    kernels = dict(parse_kernel(spec) for spec in (args.kernel or DEFAULT_KERNELS))
    channels = "per_channel" if args.per_channel else "summed"
    mode = "gray" if image.shape[0] == 1 else ("RGB, per channel" if args.per_channel else "RGB, channels summed")
    print(f"{title}: {image.shape[1]}x{image.shape[2]} pixels, height x width ({mode})")
    for name, k in kernels.items():
        st = conv_activate_pool(image, k, args.activation, 2, channels)
        print(f"\n{name} ({k.shape[0]}x{k.shape[1]}):")
        for line in _matrix(k):
            print("    " + line)
        print(
            f"  conv {'x'.join(map(str, st.conv.shape))} in [{st.conv.min():.3g}, {st.conv.max():.3g}]"
            f" -> {args.activation} ({(st.activated > 0).float().mean():.0%} > 0)"
            f" -> 2x2 max pool {'x'.join(map(str, st.pooled.shape))}"
        )
    fig = pipeline_figure(image, kernels, channels=channels, activation=args.activation, image_title=title)
    path = save_figure(fig, args.out or FIGURES_DIR / "kernels.png")
    print(f"\nwrote {path}")
    return 0
