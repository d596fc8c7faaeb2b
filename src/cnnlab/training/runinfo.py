"""What a run folder says about itself, read without loading its model: its status, settings, epochs, test
accuracy and times, for `cnnlab runs` (one line per run) and `cnnlab compare`.

Only the files a run writes atomically are read (config.json, results.json; metrics.jsonl without its torn lines),
never a checkpoint of a run in progress, and a folder that cannot be read is a run that `failed`, with why: one
line, never an exception. A run's status is one of

    running    a process holds the folder's lock (it is being written now)
    stopped    interrupted (Ctrl-C, a kill: `cnnlab train --resume` continues it), or stopped early by a callback
               or a stopping rule (--patience, --target-acc, --max-time) and tested
    completed  trained to its last epoch and tested
    failed     diverged (a NaN or infinite loss), or its files are unreadable
"""

from __future__ import annotations

import fnmatch
import html
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from cnnlab.errors import CnnlabError
from cnnlab.text import format_table
from cnnlab.training.metrics import SHOW_CI_BELOW, wilson_interval
from cnnlab.training.run import Run, json_object, list_runs, metrics_rows
from cnnlab.training.rundir import RunLock

STATUSES = ("running", "stopped", "completed", "failed")
SORT_KEYS = ("date", "acc", "name")
NOTE_WIDTH = 100  # a table's note is cut to this; --json has it whole


@dataclass(frozen=True, repr=False)
class RunInfo:
    """One run folder as `cnnlab runs` lists it."""

    path: Path
    status: str  # one of STATUSES
    note: str = ""  # why it stopped or failed, or who is writing it
    config: dict[str, Any] = field(default_factory=dict)  # its settings (config.json's "config")
    results: dict[str, Any] | None = None  # results.json, when written
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one row per epoch
    started: datetime | None = None

    def __repr__(self) -> str:
        acc = f", test_acc={self.test_acc:.4f}" if self.test_acc is not None else ""
        return f"RunInfo({self.name!r}, status={self.status!r}, model={self.model!r}, dataset={self.dataset!r}{acc})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str | None:
        return self.config.get("model")

    @property
    def dataset(self) -> str | None:
        return self.config.get("dataset")

    @property
    def epochs(self) -> int:
        """Epochs trained so far."""
        done = (self.results or {}).get("epochs_run")
        return int(done) if isinstance(done, int) else len(self.history)

    @property
    def planned_epochs(self) -> int | None:
        planned = self.config.get("epochs")
        return planned if isinstance(planned, int) else None

    @property
    def test_acc(self) -> float | None:
        acc = (self.results or {}).get("test_acc")
        return float(acc) if isinstance(acc, (int, float)) and math.isfinite(acc) else None

    @property
    def test_interval(self) -> tuple[float, float, int] | None:
        """(low, high, test images) of the 95% interval of the test accuracy."""
        results, acc = self.results or {}, self.test_acc
        n = results.get("test_images")
        if acc is None or not isinstance(n, int) or n < 1:
            return None
        low, high = results.get("test_acc_ci_low"), results.get("test_acc_ci_high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
            low, high = wilson_interval(round(acc * n), n)
        return float(low), float(high), n

    @property
    def wall_s(self) -> float | None:
        """Seconds of training (results.json's, else the last epoch's elapsed time)."""
        seconds = (self.results or {}).get("train_seconds")
        if seconds is None and self.history:
            seconds = self.history[-1].get("elapsed_s")
        return float(seconds) if isinstance(seconds, (int, float)) else None

    def to_dict(self) -> dict[str, Any]:
        """What `cnnlab runs --json` prints for the run."""
        interval = self.test_interval
        return {"name": self.name, "path": str(self.path), "model": self.model, "dataset": self.dataset,
                "status": self.status, "note": self.note or None, "epochs": self.epochs,
                "planned_epochs": self.planned_epochs, "test_acc": self.test_acc,
                "test_acc_ci": [interval[0], interval[1]] if interval else None,
                "test_images": interval[2] if interval else None, "wall_s": self.wall_s,
                "started": self.started.isoformat(timespec="seconds") if self.started else None}


def read_run_info(path: str | Path) -> RunInfo:
    """What a run folder says about itself; a folder that cannot be read is a `failed` run saying why."""
    path = Path(path)
    try:
        return _read(path)
    except OSError as exc:
        return RunInfo(path, "failed", f"unreadable: {exc.strerror or exc}")


def _read(path: Path) -> RunInfo:
    writer = RunLock.holder(path)
    config_file, results_file = path / "config.json", path / "results.json"
    written, config_problem = json_object(config_file) if config_file.exists() else (None, None)
    results, results_problem = json_object(results_file) if results_file.exists() else (None, None)
    config = written.get("config") if isinstance((written or {}).get("config"), dict) else {}
    history = metrics_rows(path) or []
    started = _started(written, config_file if config_file.exists() else path)
    if not config and writer is None and not config_problem:  # an old run without config.json: its checkpoint
        try:
            config = Run(path).config
        except CnnlabError as exc:
            config_problem = str(exc)
    info = RunInfo(path, "", "", config, results, history, started)

    def said(status: str, note: str = "") -> RunInfo:  # files named within the run, not by their whole path
        return RunInfo(info.path, status, note.replace(f"{path}{os.sep}", ""), info.config, info.results,
                       info.history, info.started)

    if writer is not None:
        return said("running", f"being written by {writer}")
    if results_problem:
        return said("failed", results_problem)
    if results is not None:
        status = results.get("status")
        if status == "diverged":
            return said("failed", f"diverged (a NaN or infinite loss) at step {results.get('step', '?')}")
        if status == "completed" and info.test_acc is not None:
            stopped = results.get("stopped")
            return said("stopped", str(stopped)) if stopped else said("completed")
        return said("failed", f"results.json says {status!r}, without a test accuracy")
    if config_problem:
        return said("failed", config_problem)
    if any((path / "checkpoints").glob("*.pt")):
        return said("stopped", f"interrupted after epoch {info.epochs}: cnnlab train --resume {_shown(path)}")
    return said("stopped", "stopped before its first checkpoint: nothing to resume")


def _shown(path: Path) -> str:
    """The path as the user would type it here: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _started(written: dict | None, fallback: Path) -> datetime | None:
    """When training began: config.json's record of it (a run from before it was recorded: the file's time)."""
    text = (written or {}).get("started")
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    try:
        return datetime.fromtimestamp(fallback.stat().st_mtime).astimezone()
    except OSError:
        return None


class RunList(list):
    """RunInfos that print as the table `cnnlab runs` shows (in Jupyter too)."""

    def table(self) -> str:
        rows = [[r.name, r.model or "?", r.dataset or "?", r.status, epochs_cell(r), accuracy_cell(r),
                 seconds_cell(r.wall_s), r.started.strftime("%Y-%m-%d %H:%M") if r.started else "?",
                 r.note if len(r.note) <= NOTE_WIDTH else r.note[:NOTE_WIDTH - 3] + "..."]
                for r in self]
        return format_table(["run", "model", "dataset", "status", "epochs", "test acc (95% CI, images)", "time",
                             "started", "note"], rows, align="llllrlrll")

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.table())}</pre>"


def runs(runs_dir: str | Path = "runs", pattern: str | None = None, sort: str = "date",
         reverse: bool = False) -> RunList:
    """Every run in `runs_dir` whose name matches `pattern` (shell-style; a plain word matches names containing it),
    sorted by start date (oldest first), test accuracy (best first, untested last) or name: printed (or shown in
    Jupyter) as the table `cnnlab runs` prints."""
    if sort not in SORT_KEYS:
        raise CnnlabError(f"sort by one of {', '.join(SORT_KEYS)}, not {sort!r}")
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    infos = [read_run_info(p) for p in list_runs(runs_dir) if not pattern or fnmatch.fnmatch(p.name, pattern)]
    oldest = datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo)
    keys = {"date": lambda r: (r.started or oldest, r.name),
            "acc": lambda r: (r.test_acc is None, -(r.test_acc or 0.0), r.name),
            "name": lambda r: r.name}
    return RunList(sorted(infos, key=keys[sort], reverse=reverse))


def counts_text(infos: Sequence[RunInfo], where: str | Path) -> str:
    """'3 runs in runs/: 1 running, 2 completed'."""
    counts = [f"{sum(r.status == s for r in infos)} {s}" for s in STATUSES if any(r.status == s for r in infos)]
    return f"{len(infos)} run{'s' if len(infos) != 1 else ''} in {where}/" + (f": {', '.join(counts)}" if counts else "")


def epochs_cell(r: RunInfo) -> str:
    """'15', or '3/10' for a run that has not trained all its epochs."""
    planned = r.planned_epochs
    return f"{r.epochs}/{planned}" if planned and r.epochs != planned and r.status != "completed" else str(r.epochs)


def accuracy_cell(r: RunInfo) -> str:
    """'99.16%', or '97.2% (94.9-98.5%, 359)' under SHOW_CI_BELOW test images; '-' before the test."""
    if r.test_acc is None:
        return "-"
    interval = r.test_interval
    if interval is None or interval[2] >= SHOW_CI_BELOW:
        return f"{r.test_acc:.2%}"
    low, high, n = interval
    return f"{r.test_acc:.1%} ({low * 100:.1f}-{high:.1%}, {n:,})"


def seconds_cell(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

