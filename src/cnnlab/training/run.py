"""A finished (or interrupted) run: its folder, config, metrics, results, model, and prediction."""

from __future__ import annotations

import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cnnlab.data.images import ImageLike
from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelSpec, get_model
from cnnlab.models.outputs import top_classes
from cnnlab.training.checkpoint import find_checkpoint, load_checkpoint
from cnnlab.training.inference import model_logits
from cnnlab.training.schema import check_run_checkpoint
from cnnlab.training.tta import predictor_probabilities


class Predictor:
    """Prediction on any image source, for anything with `.pipeline`, `.logits(x)`, `.classes`, `.outputs_are_probs`.

    `Run` (a checkpoint) and the exported-model predictors (ONNX, TorchScript) share it, so every backend
    converts and ranks images in exactly the same way.
    """

    pipeline: Pipeline
    classes: tuple[str, ...]
    outputs_are_probs: bool
    dataset: str | None = None  # what it learned from: whether a mirrored image keeps its label (--tta flip)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_proba(self, images: ImageLike | Sequence[ImageLike], tta: str = "none") -> torch.Tensor:
        """Class probabilities (N, K) for one image or a list (paths, PIL images, arrays, tensors).

        `tta="flip"` averages each image's outputs with its mirror image's (refused where that changes labels).
        """
        return predictor_probabilities(self, self.prepare(images), tta)

    def prepare(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Images as the model sees them: a normalized (N, C, H, W) batch."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            items: list = list(images)
        elif isinstance(images, (list, tuple)):
            items = list(images)
        else:
            items = [images]
        if not items:
            raise CnnlabError("no images to predict")
        return torch.cat([self.pipeline.load(item) for item in items])

    def predict(self, images: ImageLike | Sequence[ImageLike], topk: int = 3, tta: str = "none"):
        """Top-k (class name, probability) pairs: a list for one image, a list of lists for several."""
        probs = self.predict_proba(images, tta)
        out = [[(c.name, c.probability) for c in top_classes(row, self.classes, topk)] for row in probs]
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.dim() == 4)
        return out[0] if single else out


class Run(Predictor):
    """A run folder: `config.json`, `metrics.jsonl`, `results.json`, `curves.png`, `checkpoints/{last,best}.pt`."""

    def __init__(self, path: str | Path, model: nn.Module | None = None, results: dict | None = None,
                 status: str | None = None, checkpoint: str = "best"):
        self.path = Path(path)
        self._model = model
        self._results = results
        self._status = status
        self._which = checkpoint

    def __repr__(self) -> str:
        acc = self.results.get("test_acc") if self.results else None
        return f"Run({str(self.path)!r}, status={self.status!r}" + (f", test_acc={acc:.4f})" if acc else ")")

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
        """One dict per epoch from metrics.jsonl."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return list(self.checkpoint.get("history", []))
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash mid-append; the checkpoint has the history
                continue
        return rows

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
        return bool(self.spec.kwargs.get("final_softmax"))

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
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs for a normalized batch (float32, on the CPU)."""
        return model_logits(self.model, x)


def load_run(path: str | Path, checkpoint: str = "best") -> Run:
    """Open a run folder (or a checkpoint file) for evaluation and prediction."""
    path = Path(path)
    if not path.exists():
        raise CnnlabError(f"no run at {path}: give a run folder (runs/...) or a checkpoint file")
    if path.is_file():
        run = Run(path.parent.parent if path.parent.name == "checkpoints" else path.parent, checkpoint=checkpoint)
        run.checkpoint_path = path  # the file given, not the folder's best
        return run
    return Run(path, checkpoint=checkpoint)


def read_json_object(path: Path) -> dict | None:
    """A JSON object from a run's file, or None (with a warning) when the file is damaged or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"warning: {path} is unreadable ({type(exc).__name__}); ignoring it", file=sys.stderr)
        return None
    if not isinstance(value, dict):
        print(f"warning: {path} holds no JSON object; ignoring it", file=sys.stderr)
        return None
    return value
