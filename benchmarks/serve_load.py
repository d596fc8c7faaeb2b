"""Load test of `cnnlab serve` on loopback: N predictions from C concurrent clients; latency, throughput, memory.

Starts the real server (`python -m cnnlab serve RUN`, uvicorn) in a subprocess, warms it up, then C clients
(threads, each with its own keep-alive httpx connection) send N multipart PNG uploads of bundled test digits to
/api/predict, each as soon as its previous answer came (a closed loop).
Every answer is checked against the answer the warm-up got for the same image: a wrong, missing or non-200
answer is an error, and any error makes the exit code 1. The server's resident memory (VmRSS) is read before
and after, with its peak (VmHWM), and the CPU time the server and the clients spent per request: they share the
machine, so on few cores they compete. (Threads, not asyncio: httpx's async pool spent about 6 ms of CPU per
request with 50 connections, more than the server, and became the bottleneck.)

    python benchmarks/serve_load.py [--run RUN] [--requests 2000] [--clients 50] [--quick]

Without --run: the server's default model (LeNet on digits, trained once and cached); with --quick a 1-epoch
LeNet trained on 256 digits into a temporary folder and 200 requests from 10 clients, for the smoke test.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import print_environment

from cnnlab.text import format_table


def digit_pngs(n: int) -> list[bytes]:
    """n bundled test digits as 64x64 PNGs: small real uploads."""
    from PIL import Image

    from cnnlab.data.registry import get_dataset

    data = get_dataset("digits", "test")
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(data.images[i % len(data.images)][0].numpy()).resize((64, 64)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cnnlab", "serve", run, "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{proc.stdout.read()}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"no server at {url} after {timeout:g} s")


def top_class(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return None
    return response.json()["predictions"][0]["class"]


def fire(url: str, payloads: list[bytes], expected: list[str], requests: int, clients: int
         ) -> tuple[list[float], int, float]:
    """C threads, each with its own keep-alive connection, share a counter of N requests."""
    counter = itertools.count()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while (i := next(counter)) < requests:
                k = i % len(payloads)
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/predict", files={"image": ("d.png", payloads[k], "image/png")})
                    ok = top_class(r) == expected[k]
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - t0


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def quick_run(folder: str) -> str:
    import cnnlab

    out = Path(folder) / "lenet-digits"
    # Speed does not depend on the weights: a tiny run is enough to measure the server.
    cnnlab.train(recipe="digits", epochs=1, subset=256, seed=0, out=str(out), quiet=True)
    return str(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="run folder to serve (default: the server's cached digits model)")
    parser.add_argument("--requests", type=int, default=2000, help="predictions in all (default: 2000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default: 50)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 1-epoch model, 200 requests, 10 clients")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.clients = 200, 10
    print_environment()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or (quick_run(tmp) if args.quick else "")
        if not run:
            from cnnlab.apps.serve.state import default_run

            run = str(default_run())
        return measure(run, args.requests, args.clients)


def measure(run: str, requests: int, clients: int) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(run, port)
    try:
        startup = wait_until_up(url, proc)
        payloads = digit_pngs(64)
        with httpx.Client(base_url=url, timeout=60) as client:  # warm-up, and the answers to expect
            expected = [top_class(client.post("/api/predict", files={"image": ("d.png", p, "image/png")}))
                        for p in payloads]
        if None in expected:
            raise SystemExit("the warm-up predictions failed")
        before, cpu0, own0 = memory_kib(proc.pid), cpu_seconds(proc.pid), cpu_seconds()
        latencies, errors, wall = fire(url, payloads, expected, requests, clients)
        after, cpu1, own1 = memory_kib(proc.pid), cpu_seconds(proc.pid), cpu_seconds()
        alive = httpx.get(url + "/api/health", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ms = [x * 1000 for x in latencies]
    rows = [(f"{requests:,}", clients, errors, f"{requests / wall:.0f}", f"{statistics.median(ms):.1f}",
             f"{percentile(ms, 90):.1f}", f"{percentile(ms, 99):.1f}", f"{max(ms):.1f}")]
    print(f"server: {run} (up in {startup:.1f} s), {os.cpu_count()} cores shared by server and clients")
    print(format_table(("requests", "clients", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"), rows,
                       "rrrrrrrr"))
    print(f"CPU per request: server {(cpu1 - cpu0) / requests * 1000:.1f} ms, clients "
          f"{(own1 - own0) / requests * 1000:.1f} ms ({os.cpu_count()} cores, {wall:.1f} s of wall time)")
    print(f"server memory: RSS {before['VmRSS'] / 1024:.0f} MiB before, {after['VmRSS'] / 1024:.0f} MiB after "
          f"(+{(after['VmRSS'] - before['VmRSS']) / 1024:.0f}), peak {after['VmHWM'] / 1024:.0f} MiB; "
          f"still serving after the load: {'yes' if alive else 'NO'}")
    return 0 if errors == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
