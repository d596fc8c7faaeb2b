"""A run's curves.png, drawn by a helper process forked when the run starts.

On a 5 s fast-mnist run, importing matplotlib costs ~0.35 s of one core and drawing ~0.25 s. A process forked
before the optimizer is built imports matplotlib, and draws a first figure, on the otherwise idle second core
while this one imports torch._dynamo (which every torch.optim optimizer needs, ~0.8 s); then it waits. When
training ends it gets the history and draws while the test set runs here on one torch thread fewer, until it
has answered: sharing a core with an OpenMP team would stall the whole team at every barrier (fast-mnist's test
pass went 0.09 -> 0.29 s), while giving the helper that core lets both finish sooner (benchmarks/README.md,
levers table: "curves.png drawn by a helper" and the row after it). The test pass's outputs were bitwise the same
on one thread as on two for the 13 registered models tried (tests/test_curves.py checks fastnet's). Where
forking does not pay or is not safe, or the helper fails, the curves are drawn here, as before.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")

_SAMPLE = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 1 - 0.1 / e, "val_loss": 1.1 / e, "val_acc": 1 - 0.11 / e}
           for e in (1, 2)]
WAIT_S = 60.0  # the helper draws in well under a second; past this it is taken for hung and killed


def draw_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write the loss and accuracy curves of `history` to `path` (in this process)."""
    from cnnlab.viz import plot_curves, save_figure

    save_figure(plot_curves(history), path)


def _helper(conn, trainers_end) -> None:
    """The forked process: import the plotting code, wait for (history, path), draw, answer True when written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the trainer, which closes the pipe to end this
    trainers_end.close()  # so that the trainer closing (or dropping) its end is an end of file here
    try:
        # The slow part, done while the trainer imports torch._dynamo: matplotlib's import and a first drawing
        # (fonts, text layout), which makes the real one ~0.1 s faster.
        from cnnlab.viz import figure_png, plot_curves

        figure_png(plot_curves(_SAMPLE))
        history, path = conn.recv()
        draw_curves(history, path)
        conn.send(True)
    # An end of file: the run ended without curves. Any other failure: the trainer, reading no True, draws them
    # itself, and the error shows there.
    except Exception:  # noqa: BLE001
        return


class CurvesPainter:
    """`start()` early; `submit(history, path)` when training ends; `wait()` before the run is reported done."""

    def __init__(self) -> None:
        self._conn = None
        self._proc: multiprocessing.Process | None = None
        self._job: tuple[list, str] | None = None

    @property
    def forked(self) -> bool:
        return self._proc is not None

    def start(self) -> "CurvesPainter":
        """Fork the helper where it pays and is safe: on Linux, matplotlib not loaded yet, no other thread."""
        # Another Python thread may hold a lock the child would need (a web server's, a notebook's): no fork.
        if (sys.platform.startswith("linux") and "matplotlib.axes" not in sys.modules
                and threading.active_count() == 1):
            ctx = multiprocessing.get_context("fork")  # the helper shares what is imported: no second torch import
            self._conn, theirs = ctx.Pipe()
            self._proc = ctx.Process(target=_helper, args=(theirs, self._conn), name="cnnlab-curves", daemon=True)
            self._proc.start()
            theirs.close()
        return self

    def submit(self, history: Sequence[dict[str, Any]], path: str | Path) -> None:
        """Hand the finished history to the helper (drawn in `wait()` without one)."""
        self._job = (list(history), str(path))
        if self._proc is not None:
            try:
                self._conn.send(self._job)
            except OSError:  # the helper is gone: wait() draws here
                self.close()

    def sharing_cores(self, batches: Iterable[T]) -> Iterator[T]:
        """Yield `batches` on one torch thread fewer while the helper draws (it has that core), then on all."""
        threads = torch.get_num_threads()
        drawing = self._proc is not None and self._job is not None and threads > 1
        if drawing:
            torch.set_num_threads(threads - 1)
        try:
            for batch in batches:
                if drawing and self._conn.poll():  # answered, or gone: the core is free again
                    torch.set_num_threads(threads)
                    drawing = False
                yield batch
        finally:
            if drawing:
                torch.set_num_threads(threads)

    def wait(self) -> Path | None:
        """Block until curves.png is written (by the helper, else here); the path, or None if nothing was asked."""
        if self._job is None:
            self.close()
            return None
        history, path = self._job
        done = False
        if self._proc is not None:
            try:
                done = bool(self._conn.poll(WAIT_S) and self._conn.recv())
            except (EOFError, OSError):
                done = False
        self.close()
        if not done:
            draw_curves(history, path)
        return Path(path)

    def close(self) -> None:
        """End the helper (it exits on the closed pipe) and reap it; safe to call twice."""
        if self._proc is None:
            return
        self._conn.close()
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._proc = None
