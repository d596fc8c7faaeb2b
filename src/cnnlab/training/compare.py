"""Runs side by side: the settings in which they differ, their test metrics, and their curves in one figure
(`cnnlab compare`, `cnnlab.compare`)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cnnlab.errors import CnnlabError
from cnnlab.text import format_table
from cnnlab.training.metrics import accuracy_text
from cnnlab.training.run import Run, find_run
from cnnlab.training.runinfo import RunInfo, read_run_info, seconds_cell

# Settings that say where files go or how much is printed, not how a run trains.
NOT_COMPARED = frozenset({"out", "runs_dir", "quiet", "json", "overwrite", "resume", "data_dir", "download",
                          "checkpoint_every", "tensorboard", "probe_every", "eval_batch_size", "num_workers"})
METRICS = ("status", "epochs", "test accuracy", "balanced accuracy", "test loss", "best epoch", "time")


@dataclass
class Comparison:
    """Runs side by side: `settings` that differ (name -> one value per run), `metrics` (name -> one text per run),
    and each run's epoch history for `figure()`."""

    runs: list[RunInfo]
    settings: dict[str, list[Any]]
    metrics: dict[str, list[str]]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def table(self) -> str:
        """The settings that differ, then the metrics, one column per run."""
        rows = [[key, *map(_value_text, values)] for key, values in self.settings.items()]
        if not rows:
            rows = [["(settings)", *["the same"] * len(self.runs)]]
        rows += [[key, *values] for key, values in self.metrics.items()]
        return format_table(["", *self.names], rows)

    def figure(self, title: str | None = None):
        """Their curves overlaid: loss and accuracy per epoch, one colour per run."""
        from cnnlab.viz.training import plot_runs

        return plot_runs({r.name: r.history for r in self.runs}, title=title)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "settings": self.settings, "metrics": self.metrics}

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:  # Jupyter: the table, then the curves
        from cnnlab.viz.style import close_figure, figure_png, png_data_uri

        fig = self.figure()
        png = figure_png(fig)
        close_figure(fig)
        return f"<pre>{html.escape(self.table())}</pre><img src='{png_data_uri(png)}' style='max-width:100%'>"


def compare(*runs: str | Path | Run, runs_dir: str | Path = "runs") -> Comparison:
    """Two or more runs (folders, names in `runs_dir`, `last`, or `Run`s) side by side."""
    if len(runs) == 1 and isinstance(runs[0], (list, tuple)):
        runs = tuple(runs[0])
    if len(runs) < 2:
        raise CnnlabError("compare takes two runs or more, e.g. cnnlab compare runs/a runs/b")
    infos = [_info(run, runs_dir) for run in runs]
    if len({r.path.resolve() for r in infos}) < len(infos):
        raise CnnlabError(f"the same run is named twice: {', '.join(r.name for r in infos)}")
    configs = [_settings(r) for r in infos]
    keys = sorted({k for c in configs for k in c} - NOT_COMPARED, key=_setting_order(configs))
    differ = {k: [c.get(k) for c in configs] for k in keys if len({repr(c.get(k)) for c in configs}) > 1}
    return Comparison(infos, differ, {name: [_metric(r, name) for r in infos] for name in METRICS})


def _info(run: str | Path | Run, runs_dir: str | Path) -> RunInfo:
    path = run.path if isinstance(run, Run) else find_run(run, runs_dir)
    info = read_run_info(path)
    if info.status == "failed" and not info.config:
        raise CnnlabError(f"cannot compare {path}: {info.note}")
    return info


def _settings(info: RunInfo) -> dict[str, Any]:
    """The run's settings: its checkpoint's (what it trained with; config.json is for people to read), or
    config.json's while there is no checkpoint yet."""
    if info.status != "running" and any((info.path / "checkpoints").glob("*.pt")):
        try:
            return dict(Run(info.path).config)
        except CnnlabError:
            pass
    return dict(info.config)


def _setting_order(configs: Sequence[dict[str, Any]]):
    """The order TrainConfig declares its fields in (what a run trains first: model, dataset, ...)."""
    order = {k: i for c in configs for i, k in enumerate(c)}
    return lambda k: (order.get(k, len(order)), k)


def _metric(r: RunInfo, name: str) -> str:
    results = r.results or {}
    if name == "status":
        return r.status
    if name == "epochs":
        return str(r.epochs)
    if name == "time":
        return seconds_cell(r.wall_s)
    if name == "test accuracy":
        interval = r.test_interval
        if r.test_acc is None:
            return "-"
        return accuracy_text(r.test_acc, *(interval[2], interval[0], interval[1]) if interval else ())
    if name == "balanced accuracy":
        value = results.get("test_balanced_acc")
        return f"{value:.2%}" if isinstance(value, (int, float)) else "-"
    if name == "test loss":
        value = results.get("test_loss")
        return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
    if name == "best epoch":
        value = results.get("best_epoch")
        return str(value) if value is not None else "-"
    raise KeyError(name)


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value)) if all(isinstance(v, int) for v in value) else str(list(value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
