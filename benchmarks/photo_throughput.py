"""Photos at the machine's speed: the first run on a folder of photos against the network alone on each backend.

    python benchmarks/photo_throughput.py                      # 12,000 photos of 256 px, 5 classes (made once)
    python benchmarks/photo_throughput.py --images 600 --quick # a smoke run

The folder: ten classes, the left and the right half of each photo bundled with scikit-image (astronaut, camera,
chelsea, coffee, rocket), each image a random crop of 20-45% of the photo's side from within its half, mirrored half
the time, with colour jitter, resized to SIDE x SIDE and saved as a JPEG (quality 90): decoding and resizing cost
what phone photos' do, and telling a photo's two halves apart leaves the head something to get wrong.

Figures, all in this process's machine and run:
1. the network alone: EfficientNet-Lite0's backbone at 224x224 on decoded images, batches of 64, images/s (median
   of --repeat), per backend: torch NCHW float32, torch channels-last float32, torch channels-last bf16 (only where
   the CPU computes bf16 natively), ONNX Runtime float32;
2. `cnnlab train --dataset folder:DIR` in a fresh process and an empty cache (the first run), then again (the
   second run): wall seconds, peak memory (the process's maximum resident set), test accuracy, the backend;
3. the first run against the fastest backend's pure embedding time for those images (the goal: at most 1.5x);
4. with --torch-too, the first run again with the torch float32 path (ONNX Runtime not considered): accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, print_environment

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket")
CLASSES = tuple(f"{p}-{half}" for p in PHOTOS for half in ("left", "right"))


def make_folder(root: Path, images: int, side: int, seed: int = 0) -> Path:
    """`images` JPEGs in ten class folders (kept: a folder already holding them is reused)."""
    import numpy as np
    import skimage.data
    from PIL import Image, ImageEnhance

    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == f"{images} {side} {seed} halves":
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    for c, name in enumerate(CLASSES):
        photo_name, half = name.rsplit("-", 1)
        photo = Image.fromarray(np.asarray(getattr(skimage.data, photo_name)())).convert("RGB")
        (root / name).mkdir(parents=True)
        w, h = photo.size
        x0, x1 = (0, w // 2) if half == "left" else (w // 2, w)
        for k in range(images // len(CLASSES) + (c < images % len(CLASSES))):
            s = int(min(w // 2, h) * rng.uniform(0.2, 0.45) * 2)
            s = min(s, x1 - x0, h)
            x, y = rng.randint(x0, x1 - s), rng.randint(0, h - s)
            img = photo.crop((x, y, x + s, y + s)).resize((side, side), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            img = ImageEnhance.Color(ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))).enhance(
                rng.uniform(0.6, 1.4))
            img.save(root / name / f"{k:05d}.jpg", quality=90)
    marker.write_text(f"{images} {side} {seed} halves")
    return root


def network_alone(folder: Path, images: int, repeat: int) -> dict[str, float]:
    """Images/s of the backbone alone per backend, on `images` decoded photos in batches of 64."""
    import copy

    import torch

    import cnnlab
    from cnnlab.data.images import image_to_tensor, open_image
    from cnnlab.models.backbones import headless
    from cnnlab.training.backends import onnx_run, torch_run
    from cnnlab.training.process import resolve_amp

    net = cnnlab.get_model("efficientnet_lite0", num_classes=len(CLASSES), weights="DEFAULT").eval()
    backbone = headless(net)
    files = sorted(folder.rglob("*.jpg"))[:images]
    x = torch.stack([image_to_tensor(open_image(f, draft=(224, 224)), 3, (224, 224)) for f in files]).float()
    x = (x / 255 - 0.5) / 0.5
    batches = x.split(64)
    cpu = torch.device("cpu")
    runs = {"torch NCHW float32": torch_run(backbone, cpu, channels_last=False),
            "torch channels-last float32": torch_run(backbone, cpu, channels_last=True)}
    if resolve_amp("auto", cpu) == "bf16":
        bf16 = copy.deepcopy(backbone).to(memory_format=torch.channels_last)
        runs["torch channels-last bf16"] = torch_run(bf16, cpu, channels_last=True, amp="bf16")
    try:
        runs["ONNX Runtime float32"] = onnx_run(backbone, batches[0])
    except ImportError:
        print("onnxruntime is not installed: no ONNX Runtime figure")
    speeds = {}
    for name, run in runs.items():
        run(batches[0])  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for b in batches:
                run(b)
            times.append(time.perf_counter() - t0)
        speeds[name] = len(x) / median(times)
    return speeds


# `cnnlab train` as the command runs it (its malloc tuning), then the process's peak resident memory from the kernel
# (VmHWM: this process's own, where a fork's maximum would count the parent's too).
CHILD = """
import sys
import cnnlab.training.backends as backends
from cnnlab.cli.main import main
from cnnlab.cli.tuning import tune_malloc
if {torch_only}:
    backends.PAYS_S = float("inf")  # the torch float32 path: never an export
tune_malloc()
code = main(sys.argv[1:])
print("VMHWM", open("/proc/self/status").read().split("VmHWM:")[1].split()[0], flush=True)
sys.exit(code)
"""


def first_and_second_run(folder: Path, out: Path, torch_only: bool = False) -> list[dict]:
    """`cnnlab train --dataset folder:DIR` twice in fresh processes sharing one new cache: seconds, peak memory,
    results."""
    cache = Path(tempfile.mkdtemp(prefix="cnnlab-photo-cache-"))
    rows = []
    try:
        for which in ("first", "second"):
            run_dir = out / f"{'torch-' if torch_only else ''}{which}"
            cmd = [sys.executable, "-c", CHILD.format(torch_only=torch_only), "train", "--dataset", f"folder:{folder}",
                   "--out", str(run_dir), "--overwrite", "--quiet"]
            env = {**os.environ, "CNNLAB_CACHE": str(cache)}
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"the {which} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            peak = int(done.stdout.split("VMHWM")[-1].split()[0]) / 1024  # MiB: the process's own high-water mark
            results = json.loads((run_dir / "results.json").read_text())
            fx = results.get("feature_extraction") or {}
            rows.append({"run": which, "seconds": seconds, "peak_mib": peak, "test_acc": results["test_acc"],
                         "embed_s": fx.get("embed_seconds"), "cache_hits": sum(c["hit"] for c in fx.get("cache", {}).values())})
            if torch_only:
                break
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_000, help="photos in the folder (default: 12,000)")
    parser.add_argument("--side", type=int, default=256, help="their side in pixels (default: 256)")
    parser.add_argument("--folder", type=Path, help="where the folder is made and kept (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes of the network alone (default: 3)")
    parser.add_argument("--alone", type=int, default=512, help="photos the network alone runs on (default: 512)")
    parser.add_argument("--torch-too", action="store_true", help="also the first run on the torch float32 path")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one pass, 64 photos alone")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.alone = 1, 64
    print_environment()
    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-photos-"))
    folder = make_folder(args.folder or scratch / "photos", args.images, args.side)
    try:
        speeds = network_alone(folder, min(args.alone, args.images), args.repeat)
        print(f"the network alone (EfficientNet-Lite0 backbone, 224x224, batches of 64, {min(args.alone, args.images)} "
              f"photos, median of {args.repeat}):")
        base = speeds["torch NCHW float32"]
        for name, v in speeds.items():
            print(f"  {name:30s} {v:8.1f} images/s  {v / base:5.2f}x")
        fastest = max(speeds, key=speeds.get)
        rows = first_and_second_run(folder, scratch / "runs")
        if args.torch_too:
            rows += first_and_second_run(folder, scratch / "runs", torch_only=True)
        pure = args.images / speeds[fastest]
        print(f"{args.images:,} photos of {args.side} px: `cnnlab train --dataset folder:DIR` in a fresh process")
        for r in rows:
            name = "torch float32 path" if r is rows[-1] and args.torch_too else r["run"] + " run"
            print(f"  {name:20s} {r['seconds']:7.1f} s  peak {r['peak_mib']:6.0f} MiB  test accuracy "
                  f"{r['test_acc']:.2%}  embedding {r['embed_s'] or 0:.1f} s")
        print(f"first run / the fastest backend's pure embedding time ({fastest}, {pure:.1f} s): "
              f"{rows[0]['seconds'] / pure:.2f}x (goal: at most 1.5x)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
