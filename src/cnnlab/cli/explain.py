"""`cnnlab explain RUN IMAGE` / `cnnlab explain --model NAME IMAGE`: PNGs of what a CNN does with one image."""

from __future__ import annotations

import argparse
import textwrap


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="show what a model does with one image: input, filters, feature maps, Grad-CAM",
        description=textwrap.fill(
            "Write PNGs for one image: the input as the model sees it (its channels and size), the top-k "
            "predictions, the first conv layer's filters, the feature maps after every conv, activation and pool "
            "stage (one PNG per block of layers), and the Grad-CAM overlay with a saliency map. With --model NAME "
            "instead of a run, the model is built untrained (random weights): its predictions are meaningless, "
            "but its filters and feature maps show what random convolutions do to a photo."),
        epilog="examples:\n  cnnlab explain last my-digit.png\n  cnnlab explain runs/lenet-digits my-digit.png\n"
        "  cnnlab explain runs/resnet9-cifar10 cat.jpg --target dog --layers 'res1.*'\n"
        "  cnnlab explain --model resnet18 photo.jpg --out resnet18-photo",
    )
    p.add_argument("run", nargs="?", metavar="RUN",
                   help="run folder (runs/...; last: the newest run) or checkpoint file")
    p.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, BMP, TIFF, WebP, ...)")
    p.add_argument("--model", metavar="NAME", help="explain an untrained model from `cnnlab models` instead of a run")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN/explain-<image name>/ for a run, "
                   "cnnlab-figures/explain-<model>-<image name>/ with --model)")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes in the prediction bars (default: 5)")
    p.add_argument("--layers", metavar="NAMES",
                   help="feature maps of these layers only: comma-separated names or patterns, e.g. 'conv1,layer1.*' "
                   "(default: every conv, activation and pool layer)")
    p.add_argument("--target", metavar="CLASS", help="class for Grad-CAM, a name or an index (default: the prediction)")
    p.add_argument("--channels", type=int, default=8, metavar="N", help="feature-map channels per layer (default: 8)")
    p.add_argument("--in-chans", type=int, choices=[1, 3],
                   help="with --model: input channels (default: the model's own)")
    p.add_argument("--input-size", metavar="CxHxW",
                   help="with --model: input size, channels first, e.g. 3x64x64 (or HxW, e.g. 64x64) (default: the "
                   "model's own)")
    p.add_argument("--seed", type=int, help="with --model: seed of the random weights (default: 0)")
    p.add_argument("--no-invert", dest="invert", action="store_false",
                   help="never invert an image whose background is the opposite of the run's training images'")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from cnnlab.apps.explain import explain, subject_from_model, subject_from_run
    from cnnlab.errors import CnnlabError
    from cnnlab.models import parse_input_size
    from cnnlab.training.run import load_run

    if (args.run is None) == (args.model is None):
        raise CnnlabError("give a run folder or --model NAME (not both): cnnlab explain RUN IMAGE, "
                          "or cnnlab explain --model resnet18 IMAGE")
    if args.model is None and (args.in_chans or args.input_size or args.seed is not None):
        raise CnnlabError("--in-chans, --input-size and --seed go with --model; a run keeps its input and weights")
    if args.topk < 1 or args.channels < 1:
        raise CnnlabError("--topk and --channels must be at least 1")
    if args.model is not None:  # a model name, even if a folder of that name happens to exist here
        size = parse_input_size(args.input_size) if args.input_size else None
        subject = subject_from_model(args.model, args.in_chans, size, args.seed or 0)
    else:
        subject = subject_from_run(load_run(args.run))
    result = explain(subject, args.image, args.out, topk=args.topk, layers=args.layers, target=args.target,
                     channels=args.channels, invert=args.invert)
    if args.json:
        print(json.dumps({"model": result.subject.name, "trained": result.subject.trained,
                          "prediction": [{"class": c, "probability": p} for c, p in result.top],
                          "gradcam_class": result.target, "gradcam_layer": result.cam_layer,
                          "inverted": result.inverted,
                          "notes": result.notes,
                          "files": {k: str(v) for k, v in result.items()}}, indent=2))
        return 0
    print(f"{result.subject.name}: {args.image}")
    print("prediction: " + ", ".join(f"{c} {p:.1%}" for c, p in result.top))
    for note in result.notes:
        print(f"note: {note}")
    width = max(map(len, result))
    print(f"wrote {len(result)} files to {result.out_dir}/")
    for name, path in result.items():
        print(f"  {name:<{width}}  {path}  ({result.descriptions[name]})")
    return 0
