"""Training images/s with 1 and 2 processes on this machine (CPU, gloo); single-GPU throughput on CUDA.

CPU section: every configuration is a real `cnnlab train` job (`--nproc 2` launches torchrun) on MNIST with the
same global batch, so 1 and 2 processes do the same training. The figure is the job's training images/s, all
ranks together, as rank 0 measures it over an epoch (start-up, validation and checkpoints excluded); the first
epoch (warm-up) is dropped; median over epochs, then over repeats, configurations interleaved so load drifts
hit all alike. Job wall times (start-up included) are shown too.

GPU section (needs CUDA; skipped with a note otherwise): one GPU, (1) `cnnlab train` on real MNIST, data
resident on the GPU, and (2) resnet9 on synthetic tensors of CIFAR-10's shape (3x32x32, 10 classes): CIFAR-10
itself is not needed, and the figure measures the model's training step alone.

    CNNLAB_DATA=../shared/data python benchmarks/distributed_throughput.py [--repeats 3] [--subset 10000]
    python benchmarks/distributed_throughput.py --sections gpu            # on a GPU machine
    python benchmarks/distributed_throughput.py --sections synthetic-cpu  # the synthetic step on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import median, print_environment


def train_job(args: argparse.Namespace, nproc: int, threads: int, batch: int, device: str, out: Path,
              dataset: str, model: str, subset: int, extra: tuple[str, ...] = ()) -> tuple[list[float], float]:
    """Run one `cnnlab train` job; (training images/s of each epoch after the first, wall seconds)."""
    cmd = [sys.executable, "-m", "cnnlab", "train", "--json", "--model", model, "--dataset", dataset,
           "--epochs", str(args.epochs), "--batch-size", str(batch), "--device", device, "--augment", "none", "--lr", "3e-3", "--select", "best",
           "--threads", str(threads), "--out", str(out), "--nproc", str(nproc), *extra]
    if subset:
        cmd += ["--subset", str(subset)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"job failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"event": "epoch"')]
    return [r["images_per_s"] for r in rows[1:]], wall


def cpu_section(args: argparse.Namespace) -> None:
    """1 process x 1 thread, 1 process x all cores, N processes x (cores / N) threads; the same global batch."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    g = args.global_batch
    configs = [("1 process  x 1 thread", 1, 1, g), (f"1 process  x {cores} threads", 1, cores, g)]
    for n in args.nproc:
        configs.append((f"{n} processes x {max(1, cores // n)} thread(s)", n, max(1, cores // n), g // n))
    rates: dict[str, list[float]] = {c[0]: [] for c in configs}
    walls: dict[str, list[float]] = {c[0]: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, nproc, threads, batch in configs:
                per_epoch, wall = train_job(args, nproc, threads, batch, "cpu", Path(tmp) / f"{r}-{nproc}-{threads}",
                                            args.dataset, args.model, args.subset)
                rates[name].append(statistics.median(per_epoch))
                walls[name].append(wall)
                print(f"  repeat {r + 1}: {name}: {rates[name][-1]:,.0f} images/s ({wall:.1f} s job)", flush=True)
    base = median(rates[configs[0][0]])
    print(f"\nCPU, {args.model} on {args.dataset} (subset {args.subset or 'all'}), global batch {g}, "
          f"{args.epochs} epochs (first dropped), median of {args.repeats} jobs; load average now {_load()}:")
    for name, *_ in configs:
        m = median(rates[name])
        print(f"  {name:28s} {m:>9,.0f} images/s  (x{m / base:.2f} vs 1 process x 1 thread)  "
              f"job {median(walls[name]):5.1f} s")


def _load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def gpu_section(args: argparse.Namespace) -> None:
    """Single-GPU throughput: real MNIST through `cnnlab train`, and resnet9 on CIFAR-10-shaped synthetic data."""
    if not torch.cuda.is_available():
        print("\nGPU section: no CUDA GPU on this machine; not run.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.gpu_models:
            runs = [train_job(args, 1, 0, args.gpu_batch, "cuda", Path(tmp) / f"mnist-{model}-{r}", "mnist",
                              model, 0, ("--amp", args.amp)) for r in range(args.repeats)]
            rate = median([statistics.median(per_epoch) for per_epoch, _ in runs])
            print(f"  1 GPU, cnnlab train {model} on all of MNIST (real data), batch {args.gpu_batch}, amp {args.amp}: "
                  f"{rate:,.0f} images/s")
    synthetic(args, torch.device("cuda"))


def synthetic(args: argparse.Namespace, device: torch.device) -> None:
    """resnet9 training steps on random tensors of CIFAR-10's shape: the model's step alone, no data pipeline."""
    from cnnlab.models import get_model

    torch.manual_seed(0)
    net = get_model("resnet9", num_classes=10, input_size=(3, 32, 32)).to(device)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(args.gpu_batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.gpu_batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup_steps):
        step()
    rates = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.steps * args.gpu_batch / (time.perf_counter() - t0))
    print(f"  {device.type}: resnet9 on SYNTHETIC tensors of CIFAR-10's shape (3x32x32), batch {args.gpu_batch}, "
          f"amp {args.amp}, channels-last: {median(rates):,.0f} images/s (median of {args.repeats} x {args.steps} steps)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="cpu,gpu", help="comma-separated: cpu, gpu, synthetic-cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="per job; the first is dropped (warm-up)")
    ap.add_argument("--dataset", default="mnist", help="for the CPU section (digits: no data folder needed)")
    ap.add_argument("--subset", type=int, default=10000, help="training images per epoch (0: all)")
    ap.add_argument("--model", default="lenet", help="for the CPU section")
    ap.add_argument("--global-batch", type=int, default=128, help="CPU section: images per step, all ranks")
    ap.add_argument("--nproc", type=int, nargs="+", default=[2], help="CPU section: process counts besides 1")
    ap.add_argument("--gpu-models", nargs="+", default=["lenet", "mnist_cnn"])
    ap.add_argument("--gpu-batch", type=int, default=512)
    ap.add_argument("--amp", default="bf16", choices=("off", "bf16", "fp16"))
    ap.add_argument("--steps", type=int, default=50, help="synthetic: timed steps per repeat")
    ap.add_argument("--warmup-steps", type=int, default=10)
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    print_environment()
    print(f"load average at start: {_load()} (on {os.cpu_count()} cores)")
    if "cpu" in sections:
        cpu_section(args)
    if "gpu" in sections:
        gpu_section(args)
    if "synthetic-cpu" in sections:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        synthetic(args, torch.device("cpu"))


if __name__ == "__main__":
    main()
