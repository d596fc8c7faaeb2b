"""The network overview's server time and size: /api/layers for one image (one hooked forward pass, every layer's
maps encoded), then a click's /api/neuron (from the per-image cache), against /api/predict of the same image.

Two models, each a real run served by the real app, called in process through its ASGI interface (FastAPI's
TestClient: routing, upload parsing, the thread pool, JSON encoding; no network): fastnet trained on the bundled
digits (a digit as a 64x64 PNG), and efficientnet_lite0 with its ImageNet weights and a head fitted on crops of
scikit-image's sample photos, at its own 224x224 input (scikit-image's `chelsea` photo, 451x300 PNG). Every
/api/layers request finds the cache emptied, so each one redoes the pass and the encoding; medians of --repeats
requests after 2 warm-ups, the three endpoints taking turns so the machine's drift hits them alike.

    python benchmarks/overview_speed.py [--repeats 9] [--quick]
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time
import warnings
from pathlib import Path

from _common import median, print_environment

from cnnlab.text import format_table

BOUNDS_MS = {"fastnet": 300, "efficientnet_lite0": 2000}  # the server time the overview is meant to stay within


def digit_png() -> bytes:
    from PIL import Image

    from cnnlab.data.registry import get_dataset

    buf = io.BytesIO()
    Image.fromarray(get_dataset("digits", "test").images[0][0].numpy()).resize((64, 64)).save(buf, format="PNG")
    return buf.getvalue()


def photo_png() -> bytes:
    import numpy as np
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(skimage.data.chelsea())).save(buf, format="PNG")
    return buf.getvalue()


def photo_folder(root: Path, per_class: int) -> Path:
    """Random square crops of three sample photos, one class each."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = random.Random(0)
    for name in ("astronaut", "chelsea", "coffee"):
        img = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        (root / name).mkdir(parents=True)
        w, h = img.size
        for k in range(per_class):
            s = int(min(w, h) * rng.uniform(0.3, 0.6))
            x, y = rng.randint(0, w - s), rng.randint(0, h - s)
            img.crop((x, y, x + s, y + s)).resize((96, 96)).save(root / name / f"{k}.png")
    return root


def train_runs(tmp: Path, quick: bool) -> list[tuple[str, Path, bytes]]:
    import cnnlab

    small = {"epochs": 1, "subset": 256} if quick else {"epochs": 3}  # speed does not depend on the weights
    fast = cnnlab.train(model="fastnet", dataset="digits", seed=0, out=str(tmp / "fastnet"), quiet=True, **small)
    folder = photo_folder(tmp / "photos", 4 if quick else 12)
    lite = cnnlab.train(model="efficientnet_lite0", dataset=f"folder:{folder}", weights="DEFAULT",
                        input_size="96x96" if quick else "224x224", feature_extraction=True, epochs=2, seed=0,
                        out=str(tmp / "lite0"), quiet=True)
    return [("fastnet", fast.path, digit_png()), ("efficientnet_lite0", lite.path, photo_png())]


def measure(run: Path, image: bytes, repeats: int) -> dict:
    """Median server times (ms) of predict, layers (cache emptied) and neuron (cached), and the reply sizes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient

    from cnnlab.apps.serve import create_app

    app = create_app(run)
    http = TestClient(app)
    files = {"image": ("image.png", image, "image/png")}
    layers = http.post("/api/layers", files=files).json()
    first = layers["layers"][0]
    c, h, w = first["shape"]
    click = f"/api/neuron?layer={first['name']}&channel={c - 1}&row={h // 2}&col={w // 2}"
    calls = {"predict": lambda: http.post("/api/predict", files=files),
             "layers": lambda: (app.state.overviews.clear(), http.post("/api/layers", files=files))[1],
             "neuron": lambda: http.post(click, files=files)}
    times: dict[str, list[float]] = {k: [] for k in calls}
    sizes: dict[str, int] = {}
    for i in range(repeats + 2):
        for name, call in calls.items():
            t0 = time.perf_counter()
            reply = call()
            dt = time.perf_counter() - t0
            assert reply.status_code == 200, reply.text
            sizes[name] = len(reply.content)
            if i >= 2:
                times[name].append(dt * 1000)
    assert reply.json()["agrees"], "the worked value differs from the forward pass"
    return {"times": {k: median(v) for k, v in times.items()}, "all": times, "sizes": sizes,
            "layers": len(layers["layers"]), "input": layers["input"]["shape"],
            "maps": sum(len(layer["maps"]) for layer in layers["layers"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="timed requests per endpoint and model (default: 9)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny runs, lite0 at 96x96, 2 repeats")
    args = ap.parse_args()
    repeats = 2 if args.quick else args.repeats
    print_environment()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-overview-") as tmp:
        for name, run, image in train_runs(Path(tmp), args.quick):
            r = measure(run, image, repeats)
            t = r["times"]
            rows.append((name, "x".join(map(str, r["input"])), r["layers"], r["maps"], f"{t['predict']:.1f}",
                         f"{t['layers']:.1f}", f"{t['layers'] / t['predict']:.1f}x", f"{t['neuron']:.1f}",
                         f"{r['sizes']['layers'] / 1024:,.0f}", f"{t['layers'] / BOUNDS_MS[name]:.2f}"))
            print(f"  {name}: /api/layers ms " + ", ".join(f"{v:.0f}" for v in r["all"]["layers"]))
    print(f"server time, median of {repeats} requests after 2 warm-ups (ms); the overview's reply size (KiB):")
    print(format_table(("model", "input", "layers", "maps", "predict", "layers", "vs predict", "neuron",
                        "KiB", "of bound"), rows, "llrrrrrrrr"))
    print("bounds: " + ", ".join(f"{k} {v} ms" for k, v in BOUNDS_MS.items()) + " of server time for /api/layers; "
          "'of bound' is the median's share of it")


if __name__ == "__main__":
    main()
