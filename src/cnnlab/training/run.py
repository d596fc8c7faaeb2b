"""A finished (or interrupted) run: its folder, config, metrics, results, model, and prediction (`Predictor`)."""

from __future__ import annotations

import difflib
import html
import json
import sys
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError
from cnnlab.inspect.layers import model_device
from cnnlab.models import ModelSpec, get_model
from cnnlab.models.outputs import LogitsOnly
from cnnlab.training.backends import Forward
from cnnlab.training.checkpoint import find_checkpoint, load_checkpoint
from cnnlab.training.inference import model_logits
from cnnlab.training.metrics import results_accuracy_text
from cnnlab.training.predictor import Predictor
from cnnlab.training.schema import check_run_checkpoint
from cnnlab.viz.style import png_data_uri


class Run(Predictor):
    """A run folder: `config.json`, `metrics.jsonl`, `results.json`, `curves.png`, `checkpoints/{last,best}.pt`."""

    def __init__(self, path: str | Path, model: nn.Module | None = None, results: dict | None = None,
                 status: str | None = None, checkpoint: str = "best"):
        self.path = Path(path)
        self._model = model
        self._results = results
        self._status = status
        self._which = checkpoint
        self._forward: Forward | None = None
        self._forward_lock = threading.Lock()

    def __repr__(self) -> str:
        acc = self.results.get("test_acc") if self.results else None
        return f"Run({str(self.path)!r}, status={self.status!r}" + (f", test_acc={acc:.4f})" if acc else ")")

    def _repr_html_(self) -> str:
        """In Jupyter: what the run is, how it ended, its test accuracy and its curves."""
        results = self.results or {}
        facts = [f"status {self.status}"]
        if "test_acc" in results:
            facts.append(f"test accuracy {results_accuracy_text(results)}")
        if results.get("epochs_run") is not None:
            facts.append(f"{results['epochs_run']} epochs in {results.get('train_seconds', 0):.1f} s")
        curves = self.path / "curves.png"
        picture = (f"<br><img src='{png_data_uri(curves.read_bytes())}' style='max-width:100%' alt='curves'>"
                   if curves.is_file() else "")
        return f"<b>Run {html.escape(str(self.path))}</b>: {html.escape('; '.join(facts))}{picture}"

    # ---- files
    @cached_property
    def config(self) -> dict[str, Any]:
        """The settings the run was trained with: the checkpoint's own copy (config.json is for people to read;
        a hand-edited or damaged one is never trusted over the checkpoint)."""
        return dict(self.checkpoint["config"])

    @property
    def dataset(self) -> str | None:
        return self.config.get("dataset")

    @property
    def history(self) -> list[dict]:
        """One dict per epoch from metrics.jsonl (the checkpoint's copy when there is no such file)."""
        rows = metrics_rows(self.path)
        return list(self.checkpoint.get("history", [])) if rows is None else rows

    @property
    def results(self) -> dict | None:
        """Test metrics from results.json (None before the run finished)."""
        if self._results is None and (self.path / "results.json").exists():
            self._results = read_json_object(self.path / "results.json")
        return self._results

    @property
    def status(self) -> str:
        return self._status or (self.results or {}).get("status") or self.checkpoint.get("status", "unknown")

    @cached_property
    def checkpoint_path(self) -> Path:
        return find_checkpoint(self.path, self._which)

    @cached_property
    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint's contents; a damaged best.pt falls back to last.pt of the same run, saying so."""
        try:
            return check_run_checkpoint(load_checkpoint(self.checkpoint_path), self.checkpoint_path)
        except CnnlabError as exc:
            last = self.checkpoint_path.parent / "last.pt"
            if self.checkpoint_path.name != "best.pt" or not last.is_file():
                raise
            ckpt = check_run_checkpoint(load_checkpoint(last), last)
            print(f"warning: {exc}; using {last} (the run's last weights) instead", file=sys.stderr)
            self.checkpoint_path = last
            return ckpt

    # ---- what the model needs
    @cached_property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.checkpoint["model"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.checkpoint["classes"])

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.checkpoint["input_size"])

    @cached_property
    def pipeline(self) -> Pipeline:
        """The exact image conversion used in training (channels, size, normalization)."""
        return Pipeline.from_dict(self.checkpoint["pipeline"])

    @property
    def outputs_are_probs(self) -> bool:
        return self.spec.outputs_are_probs

    @property
    def single_logit(self) -> bool:
        return bool(self.checkpoint.get("single_logit"))

    @property
    def model(self) -> nn.Module:
        """The trained model (best weights), in eval mode."""
        if self._model is None:
            kwargs = dict(self.spec.kwargs)
            kwargs.pop("weights", None)  # the checkpoint holds the weights: never download them again
            # Built outside inference mode even when first asked for inside it (predict, evaluate): weights
            # created there would be inference tensors, and Grad-CAM could never take gradients through them.
            with torch.inference_mode(False):
                model = get_model(self.spec.name, num_classes=self.spec.num_classes,
                                  input_size=self.spec.input_size, **kwargs)
                model.load_state_dict(self.checkpoint["state_dict"])
            model.spec = self.spec
            self._model = model
        return self._model.eval()

    # ---- use it
    def forward(self, images: int = 0) -> Forward:
        """How the model runs over `images` images: the fastest backend that gives the same answer (torch, or ONNX
        Runtime on its cached export: training/backends.py); kept for the calls that follow."""
        with self._forward_lock:  # the server asks from several threads
            if self._forward is None or images > self._forward.images:
                self._forward = Forward(LogitsOnly(self.model), model_device(self.model), images=images)
            return self._forward

    def plan(self, images: int) -> None:
        """Say how many images are coming (a folder to predict): the backend is chosen for that many."""
        self.forward(images)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs for a normalized batch (float32, on the CPU)."""
        return model_logits(self.model, x, forward=self.forward(len(x)))


def load_run(path: str | Path, checkpoint: str = "best", runs_dir: str | Path = "runs") -> Run:
    """Open a run folder (or a checkpoint file; `last`: the newest run in `runs_dir`) for evaluation and prediction."""
    path = find_run(path, runs_dir)
    if path.is_file():
        run = Run(path.parent.parent if path.parent.name == "checkpoints" else path.parent, checkpoint=checkpoint)
        run.checkpoint_path = path  # the file given, not the folder's best
        return run
    return Run(path, checkpoint=checkpoint)


def read_json_object(path: Path) -> dict | None:
    """A JSON object from a run's file, or None (with a warning) when the file is damaged or not an object."""
    value, problem = json_object(path)
    if problem:
        print(f"warning: {problem}; ignoring it", file=sys.stderr)
    return value


def json_object(path: Path) -> tuple[dict | None, str | None]:
    """A JSON object from a run's file, or (None, what is wrong with it): silent, for readers that say it their
    way (a row of `cnnlab runs`)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__})"
    if not isinstance(value, dict):
        return None, f"{path} holds no JSON object"
    return value, None


def metrics_rows(run_dir: Path) -> list[dict] | None:
    """One dict per epoch from RUN/metrics.jsonl, or None when there is no such file. Lines torn by a crash
    mid-append, or that are not JSON objects, are left out (the checkpoint has the history)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def list_runs(runs_dir: str | Path = "runs") -> list[Path]:
    """The run folders in `runs_dir` (those with a config.json or checkpoints), oldest first."""
    root = Path(runs_dir)
    found = [p for p in root.iterdir() if (p / "config.json").is_file() or (p / "checkpoints").is_dir()] \
        if root.is_dir() else []
    return sorted(found, key=_started)


def _started(run_dir: Path) -> float:
    config = run_dir / "config.json"
    return (config if config.exists() else run_dir).stat().st_mtime


def find_run(name: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run's path: as given when it exists; `last` is the newest run in `runs_dir`, and a bare name is looked up
    there too; a run that is not there is an error naming the closest existing ones."""
    path = Path(name)
    if str(name) == "last" and not path.exists():
        runs = list_runs(runs_dir)
        if not runs:
            raise CnnlabError(f"`last` means the newest run in {runs_dir}/, and there is none: train one with "
                              f"`cnnlab train`, or give a run folder")
        return runs[-1]
    if path.exists():
        return path
    if (Path(runs_dir) / path).exists() and len(path.parts) == 1:
        return Path(runs_dir) / path
    raise CnnlabError(f"no run at {path}{_closest(path, runs_dir)}")


def _closest(path: Path, runs_dir: str | Path) -> str:
    """'; did you mean: a, b?' from the runs next to `path` (else in `runs_dir`), and how to name the newest."""
    parent = path.parent if path.parent.is_dir() and str(path.parent) != "." else Path(runs_dir)
    runs = list_runs(parent)
    names = [r.name for r in runs]
    close = [n for n in names if n.startswith(path.name)][-3:] or difflib.get_close_matches(path.name, names, n=3,
                                                                                          cutoff=0.5)
    shown = ", ".join(str(parent / n) for n in close)
    newest = f" (`last` is the newest: {runs[-1]})" if runs else ""
    if shown:
        return f"; did you mean: {shown}?{newest}"
    return f": give a run folder (runs/...) or a checkpoint file{newest}"
