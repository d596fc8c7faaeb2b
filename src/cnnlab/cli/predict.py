"""`cnnlab predict RUN IMAGE...`: class names with probabilities for any image files."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.training.config import TTA_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images with a trained run",
        description="Classify image files (PNG, JPEG, BMP, TIFF, WebP, any mode or size) with a trained run; "
        "each image is converted exactly as in training. An image whose background is the opposite of the training "
        "images' (a digit drawn dark on white, for a model trained on MNIST's white on black) is inverted first, "
        "and said to be; so is an image unlike the training images (colour for a gray model, another shape, "
        "brightness far from theirs) or one the model is unsure of. A folder expands to its images. Unreadable "
        "files are reported and the others still predicted (the exit code is then 1).",
        epilog="examples:\n  cnnlab predict last my_digit.png\n  cnnlab predict runs/photos photos/ --topk 5 --json\n"
        "  cnnlab predict runs/fashion shirt.jpg --tta flip\n  cnnlab predict runs/mnist scan.png --no-invert\n"
        "  cnnlab predict runs/mnist/model.onnx digit.png",
    )
    p.add_argument("run", help="run folder (runs/...; last: the newest), checkpoint file, or exported model "
                   "(.onnx or TorchScript)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--topk", type=int, default=3, help="classes to show per image (default: 3)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation: flip averages each image with its mirror (default: none)")
    p.add_argument("--no-invert", dest="invert", action="store_false",
                   help="never invert an image whose background is the opposite of the training images'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a TorchScript model: loading one runs the code inside it, so only for files whose "
                   "source you trust (ONNX models and run folders never run code)")
    p.set_defaults(func=run)


def expand(paths: list[str]) -> list[str]:
    """Files as given; folders replaced by the image files inside them (sorted)."""
    from pathlib import Path

    from cnnlab.data.images import list_image_files

    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += [str(f) for f in list_image_files(path)[0]]
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    from cnnlab.apps.export import load_predictor
    from cnnlab.data.images import BadImageError

    predictor = load_predictor(args.run, trust_code=args.trust_code)
    files = expand(args.images)
    if not files:
        print("error: no image files found", file=sys.stderr)
        return 2
    results, failed = [], 0
    for path, found in predictor.classify_files(files, topk=args.topk, tta=args.tta, invert=args.invert):
        if isinstance(found, BadImageError):
            failed += 1
            results.append({"image": path, "error": str(found)})
            print(f"error: {found}", file=sys.stderr)
            continue
        if isinstance(found, Exception):
            raise found
        results.append({"image": path, "predictions": [{"class": c, "probability": p} for c, p in found.top],
                        "inverted": found.inverted, "warnings": found.warnings})
        if not args.json:
            print(f"{path}: " + ", ".join(f"{c} {p:.1%}" for c, p in found.top))
            for note in found.notes():
                print(f"  note: {note}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0
