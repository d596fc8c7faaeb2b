"""`cnnlab export RUN`: the run's best model as ONNX or TorchScript, with what prediction needs, checked."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained run to ONNX or TorchScript",
        description="Write a run's best model as ONNX (for onnxruntime) or TorchScript, with a dynamic batch "
        "dimension and everything prediction needs embedded (class names, input size, the image conversion "
        "used in training), so `cnnlab predict MODEL.onnx IMAGE` works without the run folder. By default the "
        "export is checked: on real test images its outputs must match torch's to 1e-4, else nothing is written.",
        epilog="examples:\n  cnnlab export last\n  cnnlab export runs/photos --format torchscript\n"
        "  cnnlab export runs/mnist --out mnist.onnx --check-images digit.png\n  cnnlab predict mnist.onnx digit.png",
    )
    p.add_argument("run", help="run folder (runs/...; last: the newest run) or checkpoint file")
    p.add_argument("--format", choices=["onnx", "torchscript"],
                   help="output format (default: from --out's suffix, else onnx)")
    p.add_argument("--out", help="output file (default: RUN/model.onnx or RUN/model.torchscript)")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="ONNX exporter: dynamo (torch.export-based), legacy (TorchScript-based, deprecated), or "
                        "auto: dynamo, falling back to legacy if it fails (default)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the export with torch on real images (default: on)")
    p.add_argument("--check-images", nargs="+", metavar="IMAGE",
                   help="images to check with (default: 16 test images of the run's dataset)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.apps.export import export_run

    r = export_run(args.run, format=args.format, out=args.out, opset=args.opset, check=args.check,
                   check_images=args.check_images, exporter=args.exporter)
    m = r.meta
    how = f"ONNX opset {r.opset}, {r.exporter} exporter" if r.format == "onnx" else "TorchScript, trace + freeze"
    size = "x".join(map(str, m.input_size))
    print(f"exported {m.model.get('name')} ({len(m.classes)} classes, input {size}) to {r.path} "
          f"({how}, {r.bytes / 1024:,.0f} KiB) in {r.seconds:.1f} s")
    for note in r.notes:
        print(f"note: {note}")
    if r.check is not None:
        print(r.check.line("onnxruntime" if r.format == "onnx" else "torchscript"))
    else:
        print("check: skipped (--no-check)")
    print(f"predict with: cnnlab predict {r.path} IMAGE...")
    return 0
