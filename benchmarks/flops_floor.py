"""The floor: this machine's matrix-multiply rate, the FLOPs each speed recipe needs, and where its time goes.

1. fp32 (and bf16) matrix multiplies of square matrices, 1 thread and all threads: the machine's rate is the best
   wall rate of several tries or, if higher, the rate per CPU-second times the threads (on a loaded machine the
   wall figure drops; the CPU-time figure much less).
2. Per recipe: mult-adds per image (cnnlab.summary), training FLOPs = 6 x MACs x images x epochs (forward 2, the
   two backward products 4), evaluation FLOPs = 2 x MACs x images evaluated; the floor is FLOPs / rate.
3. A profile of real training steps of that recipe (its model, batch, precision, memory format, optimizer and
   in-memory loader on MNIST): CPU seconds per phase (data, forward, backward, optimizer) and the share per op.

    CNNLAB_DATA=/work/shared/data python benchmarks/flops_floor.py [--recipes fast-mnist ...] [--steps 60] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import torch
from _common import print_environment

CATEGORIES = [  # (category, substrings of op names), first match wins
    ("optimizer (Python part)", ("Optimizer.",)),
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("relu", ("relu", "threshold_backward", "clamp_min")),
    ("linear", ("addmm", "aten::mm", "linear")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("zeroing", ("fill_", "zero_")),
    ("copies, casts", ("copy_", "_to_copy", "aten::to", "contiguous", "clone")),
    ("data (gather, augment)", ("index", "grid_sampler", "affine_grid", "pad", "randperm", "randint", "rand")),
    ("optimizer and other element-wise", ("add", "mul", "div", "sub", "lerp", "sqrt", "_foreach", "where")),
]


def matmul_rate(n: int, dtype: torch.dtype, threads: int, seconds: float) -> tuple[float, float]:
    """(best wall GFLOP/s, GFLOP per CPU-second) of n x n matrix products."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    flop = 2 * n**3
    best, cpu_total, count = 0.0, 0.0, 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or count < 3:
        c0, t0 = time.process_time(), time.perf_counter()
        a @ b
        w, c = time.perf_counter() - t0, time.process_time() - c0
        best, cpu_total, count = max(best, flop / w), cpu_total + c, count + 1
    return best / 1e9, flop * count / max(cpu_total, 1e-9) / 1e9


def category(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other"


def recipe_setup(name: str, quick: bool):
    """The recipe's config and its built Job (model, optimizer, loaders) in a scratch run folder."""
    import atexit
    import shutil
    import tempfile

    from cnnlab.training.config import resolve
    from cnnlab.training.plan import Plan
    from cnnlab.training.setup import build

    scratch = tempfile.mkdtemp(prefix="cnnlab-floor-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # the run folder is scratch: gone at exit
    settings = {"recipe": name, "out": scratch, "quiet": True}
    if quick:
        settings |= {"subset": 2000, "epochs": 1}
    cfg = resolve(settings)
    return cfg, build(Plan(cfg))


def flop_budget(cfg, s) -> dict:
    """Mult-adds per image and the FLOPs of the whole recipe."""
    from cnnlab import summary

    macs = summary(s.net, tuple(s.net.spec.input_size)).macs
    train = s.data.train
    train_images = train.num_samples if not train.drop_last else len(train) * cfg.batch_size
    val_images = len(s.data.val.targets) if s.data.val is not None else 0
    test_images = len(s.data.test.targets)
    train_flops = 6 * macs * train_images * cfg.epochs
    eval_flops = 2 * macs * (val_images * cfg.epochs + test_images)
    return {"macs": macs, "train_images": train_images, "epochs": cfg.epochs, "val_images": val_images,
            "test_images": test_images, "flops_per_epoch": 6 * macs * train_images, "train_flops": train_flops,
            "eval_flops": eval_flops}


def profile_steps(cfg, s, steps: int, warmup: int = 3) -> dict:
    """CPU seconds per phase over `steps` training steps after `warmup` untimed ones, then a torch.profiler op table
    of as many more."""
    from cnnlab.training.engine import autocast

    model, opt = s.model, s.optimizer
    model.train()
    batches = iter(s.data.train)
    phases = defaultdict(float)

    def step(timed: bool) -> None:
        c0 = time.process_time()
        x, y = next(batches)
        c1 = time.process_time()
        with autocast(s.device, cfg.amp):
            loss, _ = s.criterion(model(x), y)
        c2 = time.process_time()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        c3 = time.process_time()
        opt.step()
        loss.item()
        c4 = time.process_time()
        if timed:
            for k, v in zip(("data", "forward", "backward", "optimizer"), (c1 - c0, c2 - c1, c3 - c2, c4 - c3)):
                phases[k] += v

    steps = min(steps, (len(s.data.train) - warmup) // 2)  # warm-up steps, then `steps` timed and `steps` profiled
    if steps < 1:
        raise SystemExit(f"{cfg.recipe}: only {len(s.data.train)} batches per epoch; profiling needs at least "
                         f"{warmup + 2}")
    for _ in range(warmup):
        step(False)
    w0 = time.perf_counter()
    for _ in range(steps):
        step(True)
    wall = time.perf_counter() - w0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(False)
    by_cat: dict[str, float] = defaultdict(float)
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::") or e.key.startswith("Optimizer")]
    for e in ops:
        by_cat[category(e.key)] += e.self_cpu_time_total
    total = max(sum(by_cat.values()), 1)
    top = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:10]
    images = steps * cfg.batch_size
    return {"images": images, "cpu_s": sum(phases.values()), "wall_s": wall, "phases": dict(phases),
            "op_share": {k: v / total for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
            "top_ops": {e.key: e.self_cpu_time_total / total for e in top}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["fast-mnist", "best-mnist", "fast-fashion"])
    ap.add_argument("--steps", type=int, default=60, help="training steps to time and to profile per recipe")
    ap.add_argument("--threads", type=int, default=0, help="threads for the profiled steps (0: the recipe's)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: small matrices, one warm-up step, one timed and one profiled step")
    args = ap.parse_args()
    all_threads = torch.get_num_threads()
    print_environment()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")

    print("matrix multiply (n x n), best wall rate and rate per CPU-second:")
    rates = {}
    sizes = [256] if args.quick else [1024, 2048]
    for dtype in (torch.float32, torch.bfloat16):
        for threads in sorted({1, all_threads}):
            for n in sizes:
                wall, cpu = matmul_rate(n, dtype, threads, 0.2 if args.quick else 2.0)
                # The machine's rate: the best wall figure, or (on a loaded machine, where other processes take
                # the cores) the rate per CPU-second times the threads, whichever is higher.
                rates[(dtype, threads)] = max(rates.get((dtype, threads), 0.0), wall, cpu * threads)
                print(f"  {str(dtype)[6:]:9s} n={n:5d} {threads} thread(s): {wall:7.1f} GFLOP/s wall, "
                      f"{cpu:7.1f} GFLOP per CPU-second", flush=True)
    torch.set_num_threads(all_threads)

    from cnnlab.training.recipes import get_recipe, list_recipes

    known = {r.name for r in list_recipes()}
    for name in args.recipes:
        if name not in known:
            print(f"\n{name}: no such recipe, skipped")
            continue
        cfg, s = recipe_setup(name, args.quick)
        if args.threads:
            torch.set_num_threads(args.threads)
        threads = torch.get_num_threads()
        dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float32
        rate = rates[(dtype, max(t for d, t in rates if d == dtype and t <= threads))]
        b = flop_budget(cfg, s)
        floor_s = (b["train_flops"] + b["eval_flops"]) / (rate * 1e9)
        print(f"\n{name}: {get_recipe(name).description}")
        print(f"  {cfg.model} {b['macs'] / 1e6:.3f}M mult-adds/image; {b['train_images']:,} training images x "
              f"{b['epochs']} epochs; {b['val_images']:,} val / epoch, {b['test_images']:,} test")
        print(f"  training {b['flops_per_epoch'] / 1e12:.3f} TFLOP/epoch, {b['train_flops'] / 1e12:.3f} TFLOP in all; "
              f"evaluation {b['eval_flops'] / 1e12:.3f} TFLOP")
        print(f"  floor at the {str(dtype)[6:]} matmul rate with {threads} thread(s) ({rate:.0f} GFLOP/s): "
              f"{floor_s:.2f} s")
        # Quick: a step of best-mnist takes about a second here, and the smoke run only shows the script works.
        p = profile_steps(cfg, s, 1, warmup=1) if args.quick else profile_steps(cfg, s, args.steps)
        per_image_cpu = p["cpu_s"] / p["images"]
        achieved = 6 * b["macs"] / per_image_cpu / 1e9
        epoch_cpu = per_image_cpu * b["train_images"]
        per_core = rates[(dtype, 1)]
        epoch_wall = p["wall_s"] / p["images"] * b["train_images"]
        print(f"  measured: {p['images']:,} images in {p['cpu_s']:.2f} CPU-s ({p['wall_s']:.2f} s wall): "
              f"{achieved:.1f} GFLOP per CPU-second, {epoch_cpu:.1f} CPU-s ({epoch_wall:.1f} s wall) per epoch; "
              f"{per_core / max(achieved, 1e-9):.1f}x from the 1-thread {str(dtype)[6:]} matmul rate "
              f"({per_core:.0f} GFLOP/s)")
        print("  CPU time by phase: " + ", ".join(f"{k} {v / p['cpu_s']:.0%}" for k, v in p["phases"].items()))
        print("  op time by kind (torch.profiler): " + ", ".join(f"{k} {v:.0%}" for k, v in p["op_share"].items()))
        print("  top ops: " + ", ".join(f"{k[6:] if k.startswith('aten::') else k} {v:.0%}"
                                        for k, v in p["top_ops"].items()))
        torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
