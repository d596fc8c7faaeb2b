"""Time to accuracy: wall seconds of `cnnlab train --recipe R` from process start to a complete run folder, over
several seeds, against the PyTorch examples' MNIST recipe (benchmarks/reference_mnist.py) measured in the same run.

Each recipe runs first with an empty decoded-data cache (a fresh CNNLAB_CACHE: the "first run" decodes the raw
files), then once per seed with that cache warm. Every child is timed from its launch to its exit, with its CPU
seconds and peak resident memory (from wait4). The reference trains until its test accuracy reaches 99%; the
MNIST recipes' seeds then run once more, so that our time brackets the reference's minutes (a shared machine's
speed drifts over minutes): the ratio uses the median of both rounds, and each round's is printed too.

    CNNLAB_DATA=/work/shared/data python benchmarks/time_to_accuracy.py [--recipes fast-mnist] [--seeds 5]
        [--reference-epochs N | --no-reference] [--threads N] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The goals, printed next to the figures (never asserted): mean and minimum accuracy, median seconds.
GOALS = {
    "fast-mnist": {"mean_acc": 0.990, "min_acc": 0.989, "seconds": 10.0, "max_rss_mib": 1024},
    "best-mnist": {"mean_acc": 0.996, "seconds": 180.0},
    "fast-fashion": {"mean_acc": 0.92, "seconds": 30.0},
}


@dataclass
class ChildRun:
    """One timed child process: wall and CPU seconds, peak memory, and the JSON events it printed."""

    label: str
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    returncode: int
    events: list[dict] = field(default_factory=list)
    load_before: float = 0.0

    def last(self, event: str) -> dict:
        found = [e for e in self.events if e.get("event") == event]
        return found[-1] if found else {}


def print_environment_from_a_child() -> None:
    """The usual environment line, printed by a child: this process must not import torch, because a child's
    peak memory (ru_maxrss) starts from its parent's resident size at the fork. The child leaves without
    interpreter teardown (a second of torch's objects freed for nothing)."""
    code = "import os, sys; from _common import print_environment; print_environment(); sys.stdout.flush(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True)


def run_child(label: str, cmd: list[str], env: dict[str, str]) -> ChildRun:
    """Launch, wait with wait4 (this child's own rusage, not every child's), and parse its JSON lines."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    events = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if proc.returncode != 0:
        print(f"  {label}: exit code {proc.returncode}\n{err[-2000:]}", file=sys.stderr)
    return ChildRun(label, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
                    events, load)


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """Read stdout and stderr to the end without reaping the child (wait4 does that, to get its rusage)."""
    chunks: dict[str, str] = {}

    def read(name: str, stream) -> None:
        chunks[name] = stream.read()

    threads = [threading.Thread(target=read, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return chunks.get("out", ""), chunks.get("err", "")


def train_cmd(recipe: str, seed: int, out: Path, extra: list[str]) -> list[str]:
    # --overwrite: the round after the reference trains the same seeds into the same folders again.
    return [sys.executable, "-m", "cnnlab", "train", "--recipe", recipe, "--seed", str(seed), "--out", str(out),
            "--overwrite", "--json", *extra]


def run_recipe(recipe: str, seeds: list[int], work: Path, extra: list[str]) -> dict:
    """The first run (empty cache), then one run per seed with the cache warm."""
    first = run_child(f"{recipe} seed {seeds[0]} (first run, empty cache)",
                      train_cmd(recipe, seeds[0], work / f"{recipe}-first", extra), _recipe_env(recipe, work))
    _print_run(first)
    return {"first": first, "runs": run_seeds(recipe, seeds, work, extra)}


def run_seeds(recipe: str, seeds: list[int], work: Path, extra: list[str], label: str = "") -> list[ChildRun]:
    """One run per seed with the recipe's cache warm."""
    runs = []
    for seed in seeds:
        r = run_child(f"{recipe} seed {seed}{label}", train_cmd(recipe, seed, work / f"{recipe}-{seed}", extra),
                      _recipe_env(recipe, work))
        _print_run(r)
        runs.append(r)
    return runs


def _recipe_env(recipe: str, work: Path) -> dict[str, str]:
    return {**os.environ, "CNNLAB_CACHE": str(work / f"cache-{recipe}")}


def _acc(r: ChildRun) -> float | None:
    return r.last("done").get("test_acc")


def _print_run(r: ChildRun) -> None:
    acc = _acc(r)
    acc_text = f"{acc:.2%}" if acc is not None else "failed"
    print(f"  {r.label:45s} {r.wall_s:7.2f} s wall {r.cpu_s:7.2f} s CPU {r.max_rss_mib:6.0f} MiB peak  "
          f"test {acc_text}  (load {r.load_before:.1f})", flush=True)


def summarize(recipe: str, result: dict) -> dict:
    """Mean/min accuracy over the seeds, median wall time over the warm runs (both rounds), the first run's time."""
    done = [r for r in result["runs"] if _acc(r) is not None]
    after = [r for r in result.get("after", []) if _acc(r) is not None]
    accs = [_acc(r) for r in done]
    timed = done + after
    summary = {
        "recipe": recipe,
        "seeds": len(done),
        "mean_acc": statistics.mean(accs) if accs else None,
        "min_acc": min(accs) if accs else None,
        "median_wall_s": statistics.median(r.wall_s for r in timed) if timed else None,
        "median_cpu_s": statistics.median(r.cpu_s for r in timed) if timed else None,
        "first_run_wall_s": result["first"].wall_s,
        "max_rss_mib": max(r.max_rss_mib for r in [result["first"], *result["runs"], *result.get("after", [])]),
        "first_run_same_acc": _acc(result["first"]) == (accs[0] if accs else None),
    }
    if done and after:
        # Same seeds, same numbers: the second round only adds times.
        summary["rounds_same_acc"] = [_acc(r) for r in result["runs"]] == [_acc(r) for r in result["after"]]
        summary["median_wall_s_rounds"] = [statistics.median(r.wall_s for r in rs) for rs in (done, after)]
    return summary


def goal_lines(s: dict) -> list[str]:
    """'met' / 'NOT met' for each goal of the recipe (reported, never asserted)."""
    goal = GOALS.get(s["recipe"], {})
    checks = []
    if "mean_acc" in goal and s["mean_acc"] is not None:
        checks.append((f"mean accuracy >= {goal['mean_acc']:.1%}", s["mean_acc"] >= goal["mean_acc"]))
    if "min_acc" in goal and s["min_acc"] is not None:
        checks.append((f"every seed >= {goal['min_acc']:.1%}", s["min_acc"] >= goal["min_acc"]))
    if "seconds" in goal and s["median_wall_s"] is not None:
        checks.append((f"median wall <= {goal['seconds']:g} s", s["median_wall_s"] <= goal["seconds"]))
    if "max_rss_mib" in goal:
        checks.append((f"peak memory <= {goal['max_rss_mib']} MiB", s["max_rss_mib"] <= goal["max_rss_mib"]))
    return [f"    goal {name}: {'met' if ok else 'NOT met'}" for name, ok in checks]


def run_reference(max_epochs: int, limit: int, target: float, threads: int) -> dict:
    """The examples' recipe until `target` test accuracy (or `max_epochs`), timed from launch to exit."""
    cmd = [sys.executable, str(HERE / "reference_mnist.py"), "--json", "--epochs", str(max_epochs),
           "--target", str(target), "--threads", str(threads)]
    if limit:
        cmd += ["--limit", str(limit)]
    print(f"\nreference (PyTorch examples' MNIST recipe, at most {max_epochs} epochs):", flush=True)
    r = run_child("reference", cmd, dict(os.environ))
    for e in r.events:
        if e.get("event") == "epoch":
            print(f"  epoch {e['epoch']:2d}  test {e['test_acc']:.2%}  {e['elapsed_s']:8.1f} s since start", flush=True)
    done = r.last("done")
    reached = bool(done.get("reached"))
    print(f"  {'reached' if reached else 'did NOT reach'} {target:.1%}: {r.wall_s:.1f} s wall, {r.cpu_s:.1f} s CPU, "
          f"{r.max_rss_mib:.0f} MiB peak (load {r.load_before:.1f})", flush=True)
    return {"run": r, "reached": reached, "wall_s": r.wall_s, "epochs": done.get("epochs"),
            "test_acc": done.get("test_acc")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["fast-mnist"], help="recipes to time (see `cnnlab recipes`)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per recipe")
    ap.add_argument("--reference-epochs", type=int, default=14,
                    help="cap on the reference's epochs (it stops earlier at 99%%); a cap below 5 may not reach it")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference (no ratio)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every run, ours and the reference (default: torch's, i.e. all cores; "
                         "1 with --quick, since a loaded machine makes small multi-threaded steps crawl)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (printed) instead of deleting them")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 seed, 1,000 training images, reference 1 epoch on 256 images")
    args = ap.parse_args()
    if "CNNLAB_DATA" not in os.environ:
        sys.exit("set CNNLAB_DATA to the folder holding MNIST/raw (e.g. CNNLAB_DATA=/work/shared/data)")
    seeds = list(range(1 if args.quick else args.seeds))
    threads = args.threads if args.threads is not None else (1 if args.quick else 0)
    extra = ["--threads", str(threads)] if threads else []
    if args.quick:
        extra += ["--subset", "1000", "--epochs", "1"]
    print_environment_from_a_child()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(wall times are only comparable on a quiet machine)\n", flush=True)

    tmp = tempfile.mkdtemp(prefix="cnnlab-tta-")
    work = Path(tmp)
    results, summaries = {}, {}
    for recipe in args.recipes:
        print(f"{recipe}:", flush=True)
        results[recipe] = run_recipe(recipe, seeds, work, extra)

    reference = None
    if not args.no_reference:
        reference = run_reference(1 if args.quick else args.reference_epochs, 256 if args.quick else 0, 0.99, threads)
        for recipe in filter(_compared, args.recipes):
            print(f"\n{recipe}, after the reference:", flush=True)
            results[recipe]["after"] = run_seeds(recipe, seeds, work, extra, label=" (after)")
    for recipe in args.recipes:
        summaries[recipe] = summarize(recipe, results[recipe])

    print("\nsummary (median wall time over the warm runs; accuracy over all seeds):")
    for recipe, s in summaries.items():
        if s["mean_acc"] is None:
            print(f"  {recipe}: every run failed")
            continue
        print(f"  {recipe}: mean test accuracy {s['mean_acc']:.2%}, min {s['min_acc']:.2%} over {s['seeds']} seeds; "
              f"median {s['median_wall_s']:.2f} s wall ({s['median_cpu_s']:.2f} s CPU); first run "
              f"{s['first_run_wall_s']:.2f} s; peak memory {s['max_rss_mib']:.0f} MiB"
              + ("" if s["first_run_same_acc"] else "  (first run's accuracy differs from the warm run's!)")
              + ("" if s.get("rounds_same_acc", True) else "  (the second round's accuracy differs!)"))
        if not args.quick:
            for line in goal_lines(s):
                print(line)
        if reference and _compared(recipe) and s["median_wall_s"]:
            ratio = reference["wall_s"] / s["median_wall_s"]
            bound = "" if reference["reached"] else " at least (the reference did not reach 99% within its cap)"
            s["reference_ratio"] = ratio
            rounds = s.get("median_wall_s_rounds")
            each = (f" (before it {rounds[0]:.2f} s: {reference['wall_s'] / rounds[0]:.1f}x; after it {rounds[1]:.2f} s:"
                    f" {reference['wall_s'] / rounds[1]:.1f}x)" if rounds else "")
            print(f"    reference time to 99% / {recipe} median of both rounds: {reference['wall_s']:.1f} / "
                  f"{s['median_wall_s']:.2f} = {ratio:.1f}x{bound}{each}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if args.json:
        data = {"summaries": summaries,
                "runs": {k: {"first": asdict(v["first"]), "runs": [asdict(r) for r in v["runs"]],
                             "after": [asdict(r) for r in v.get("after", [])]}
                         for k, v in results.items()},
                "reference": ({k: v for k, v in reference.items() if k != "run"} | {"run": asdict(reference["run"])}
                              if reference else None)}
        args.json.write_text(json.dumps(data, indent=2, default=str))
    if args.keep:
        print(f"run folders kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _compared(recipe: str) -> bool:
    """The recipes measured against the reference: the MNIST ones."""
    return recipe.endswith("mnist") and not recipe.endswith("fashion")


if __name__ == "__main__":
    main()
