"""The model a server holds: loaded once; predictions share it freely, explanations use a private copy under a lock.

Concurrency: a forward pass under `torch.inference_mode` changes nothing in the model, so any number of request
threads may predict with the shared model at once. Feature maps and Grad-CAM need forward hooks (and Grad-CAM a
backward pass); hooks on the shared model would fire inside other requests' predictions too. So explanations run
on a second copy of the model that nothing else touches, one request at a time (a lock). Predictions never wait
for an explanation.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch import nn

from cnnlab.apps.serve.encode import map_to_uint8, png_data_url
from cnnlab.apps.serve.errors import InvalidInput, NotAvailable
from cnnlab.data.domain import InputCheck, confidence_warning
from cnnlab.data.paths import user_cache_dir
from cnnlab.errors import CnnlabError
from cnnlab.viz.images import to_uint8, upscale

DEFAULT_MODEL, DEFAULT_DATASET, DEFAULT_SEED = "lenet", "digits", 0
DEFAULT_EPOCHS = 5  # about 97% test accuracy on the bundled digits; seconds on a laptop CPU
MIN_SHOWN_SIDE = 224  # "the image as the model sees it" is scaled up (nearest) to at least this many pixels


# ---------------------------------------------------------------- the default model, trained once and cached


def default_run_dir(epochs: int | None = None) -> Path:
    """Where the default model lives: <cnnlab cache>/serve/lenet-digits-e<epochs>-s<seed>."""
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    return user_cache_dir() / "serve" / f"{DEFAULT_MODEL}-{DEFAULT_DATASET}-e{epochs}-s{DEFAULT_SEED}"


def _complete(path: Path) -> bool:
    return (path / "checkpoints" / "best.pt").is_file() and (path / "results.json").is_file()


def _train_default(out: Path, epochs: int) -> None:
    from cnnlab.training import train

    train(model=DEFAULT_MODEL, dataset=DEFAULT_DATASET, epochs=epochs, seed=DEFAULT_SEED, out=str(out), quiet=True)


def default_run(epochs: int | None = None, trainer: Callable[[Path, int], None] | None = None) -> Path:
    """The default model's run folder: LeNet trained on the bundled digits at first use, then reused.

    Training writes into a private temporary folder that is renamed into place when complete: a rename is atomic,
    so a reader never sees half a run, and of two servers starting at once the second rename fails and that
    server uses the first one's run (its own copy is discarded).
    """
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    target = default_run_dir(epochs)
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-training-", dir=target.parent))
    try:
        (trainer or _train_default)(tmp / "run", epochs)
        if not _complete(tmp / "run"):
            raise CnnlabError(f"training the default model in {tmp} did not produce a finished run")
        try:
            os.rename(tmp / "run", target)
        except OSError:
            if not _complete(target):  # not another server's finished run: something else is in the way
                raise CnnlabError(f"{target} exists but holds no finished run: delete it and start again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- the served model


@dataclass
class FeatureLayer:
    """One layer whose output is a spatial map: its name, module type, kind and output shape (C, H, W)."""

    name: str
    type: str
    kind: str
    shape: tuple[int, int, int]


@dataclass
class Explained:
    """What /api/explain returns, before it becomes JSON."""

    probs: torch.Tensor  # (K,)
    target: int  # the class Grad-CAM explains
    layers: list[FeatureLayer]
    layer: str | None  # the layer whose maps are shown
    maps: list[dict[str, Any]] = field(default_factory=list)  # per channel: index, image, min, max
    cam_layer: str | None = None
    cam_image: str | None = None
    notes: list[str] = field(default_factory=list)


class ServedModel:
    """A Run (or an exported predictor with the same surface) behind thread-safe predict and explain calls."""

    def __init__(self, predictor: Any, source: str):
        self.predictor = predictor
        self.source = source  # where the model came from, for people reading /api/model
        self.classes: tuple[str, ...] = tuple(predictor.classes)
        self.input_size: tuple[int, int, int] = tuple(int(v) for v in predictor.input_size)
        self.pipeline = predictor.pipeline
        self._lock = threading.Lock()  # one explanation at a time, on _explainer
        self._explainer: nn.Module | None = None
        self._cam_layer: str | None = None
        self.summary: dict[str, Any] | None = None
        # What the REST API's schema offers (found once, at start-up): layers with feature maps (/api/explain),
        # layers in the overview (/api/layers), layers whose values are worked out (/api/neuron).
        self.feature_layers: list[str] = []
        self.overview_layers: list[str] = []
        self.neuron_layers: list[str] = []
        model = _torch_model(predictor)
        if model is not None:
            # Built outside inference mode, so Grad-CAM can take gradients through the copy's weights.
            with torch.inference_mode(False):
                self._explainer = copy.deepcopy(model).eval()
            self._prepare_explainer()

    @classmethod
    def load(cls, run: Any = None, trust_code: bool = False) -> "ServedModel":
        """From a Run, a run folder or checkpoint, an exported .onnx file (a TorchScript one only with
        `trust_code`: it runs its own code), or None (the cached default model)."""
        from cnnlab.apps.export.onnx_predictor import load_predictor
        from cnnlab.training.run import Run, load_run

        if run is None:
            path = default_run()
            return cls(load_run(path), f"default model: {DEFAULT_MODEL} trained on the bundled {DEFAULT_DATASET}")
        if isinstance(run, (str, Path)):
            predictor = load_predictor(run, trust_code=trust_code)
            # Named without the folders above it: /api/model is no map of this machine's disk.
            if isinstance(predictor, Run):
                return cls(predictor, f"run {Path(run).resolve().name}")
            return cls(predictor, f"exported model {Path(run).name} (predictions only)")
        if isinstance(run, Run):
            return cls(run, f"run {run.path.resolve().name}")
        if hasattr(run, "predict_proba") and hasattr(run, "classes"):
            return cls(run, repr(run))
        raise CnnlabError(f"serve takes a run folder, a checkpoint, an .onnx file or a Run, got {type(run).__name__}")

    def _prepare_explainer(self) -> None:
        """Find Grad-CAM's layer and the layer summary once, at start-up, on the private copy."""
        from cnnlab.inspect.gradcam import find_target_layer
        from cnnlab.inspect.summary import summary
        from cnnlab.viz import images  # noqa: F401  (matplotlib's import, paid now rather than by the first user)

        model = self._explainer
        with self._lock:
            try:
                self.summary = summary(model, self.input_size).to_dict()
            except CnnlabError:
                self.summary = None
            if any(isinstance(m, nn.Conv2d) for m in model.modules()):
                try:
                    self._cam_layer = find_target_layer(model, self.input_size)
                except CnnlabError:
                    self._cam_layer = None
            try:
                self._find_layers(model)
            except CnnlabError:  # the endpoints say why when asked; the schema then offers any name
                pass

    def _find_layers(self, model: nn.Module) -> None:
        """The layer names each endpoint takes, from one pass of a blank input (names do not depend on the image)."""
        from cnnlab.inspect.explanation import explain_image
        from cnnlab.inspect.neuron import workable_layers
        from cnnlab.inspect.overview import record_overview

        x = torch.zeros(1, *self.input_size)
        probs = bool(getattr(self.predictor, "outputs_are_probs", False))
        self.feature_layers = [f.name for f in _spatial_layers(explain_image(model, x, gradcam=False,
                                                                             outputs_are_probs=probs).features)]
        seen = record_overview(model, x, outputs_are_probs=probs)
        self.overview_layers, self.neuron_layers = list(seen.shown), workable_layers(seen)

    @property
    def flip_ok(self) -> bool:
        """Whether a mirrored image keeps its label for this model (test-time augmentation `flip`)."""
        from cnnlab.training.tta import dataset_flip_ok

        return dataset_flip_ok(getattr(self.predictor, "dataset", None))

    # ---- facts
    @property
    def name(self) -> str:
        spec = getattr(self.predictor, "spec", None)
        if spec is not None:
            return spec.name
        meta = getattr(self.predictor, "meta", None)
        return str((getattr(meta, "model", None) or {}).get("name", "model"))

    def info(self) -> dict[str, Any]:
        """Name, classes, input size, where it came from, its test accuracy (with its 95% interval and the number of
        test images it comes from) and its layer summary."""
        config = getattr(self.predictor, "config", None) or {}
        results = getattr(self.predictor, "results", None) or {}
        meta = getattr(self.predictor, "meta", None)  # an exported model carries its dataset in its metadata
        return {
            "name": self.name,
            "source": self.source,
            "dataset": _public_name(config.get("dataset") or getattr(meta, "dataset", None)),
            "classes": list(self.classes),
            "input_size": list(self.input_size),
            "test_acc": results.get("test_acc"),
            "test_acc_ci": ([results["test_acc_ci_low"], results["test_acc_ci_high"]]
                            if "test_acc_ci_low" in results and "test_acc_ci_high" in results else None),
            "test_images": results.get("test_images"),
            "test_balanced_acc": results.get("test_balanced_acc"),
            "can_explain": self._explainer is not None,
            "gradcam_layer": self._cam_layer,
            "summary": self.summary,
        }

    # ---- use it
    def prepare(self, image: Image.Image, invert: bool = True) -> tuple[torch.Tensor, InputCheck]:
        """A decoded image as the model's normalized (1, C, H, W) input: the exact conversion used in training,
        inverted when its background is the opposite of the training images' (unless `invert` is False), and
        what is unlike the training images."""
        with torch.inference_mode():
            if hasattr(self.predictor, "prepare_checked"):  # a Run or an exported model: knows its dataset
                x, checks = self.predictor.prepare_checked(image, invert)
                return x, checks[0]
            return self.pipeline.load_checked(image, invert)

    def predict(self, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities (K,) for one prepared input; safe to call from many threads at once."""
        from cnnlab.training.tta import predictor_probabilities

        with torch.inference_mode():
            return predictor_probabilities(self.predictor, x, tta)[0].float()

    def shown_png(self, x: torch.Tensor) -> str:
        """The input as the model sees it (its channels and size), scaled up with nearest-neighbour."""
        return png_data_url(upscale(to_uint8(self.pipeline.denormalize(x)[0]), MIN_SHOWN_SIDE))

    def explain(self, x: torch.Tensor, layer: str | None = None, channels: int = 16,
                target: int | None = None) -> Explained:
        """Feature maps of one layer (the others listed) and the Grad-CAM overlay, for one prepared input."""
        from cnnlab.inspect.explanation import explain_image

        model = self._explainer
        if model is None:
            raise NotAvailable("feature maps and Grad-CAM need the PyTorch model: serve the run folder, not an "
                               "exported file")
        with self._lock:
            seen = explain_image(model, x, target=target, gradcam=self._cam_layer is not None,
                                 cam_layer=self._cam_layer,
                                 outputs_are_probs=bool(getattr(self.predictor, "outputs_are_probs", False)))
        if self._cam_layer is None:
            seen.notes.append(f"{self.name} has no conv layer with a spatial output: no Grad-CAM")
        result = Explained(seen.probs, seen.target, _spatial_layers(seen.features), None, notes=seen.notes)
        _pick_maps(result, seen.features, layer, channels)
        if seen.heatmap is not None:
            from cnnlab.viz.images import overlay_heatmap

            shown = upscale(to_uint8(self.pipeline.denormalize(x)[0]), MIN_SHOWN_SIDE)
            result.cam_layer, result.cam_image = seen.cam_layer, png_data_url(overlay_heatmap(shown, seen.heatmap))
        return result


    def record(self, x: torch.Tensor) -> Any:
        """Every layer's input and output for one prepared input, in one hooked pass (inspect.overview)."""
        from cnnlab.inspect.overview import record_overview

        if self._explainer is None:
            raise NotAvailable("the network overview needs the PyTorch model: serve the run folder, not an "
                               "exported file")
        with self._lock:
            return record_overview(self._explainer, x,
                                   outputs_are_probs=bool(getattr(self.predictor, "outputs_are_probs", False)))

    def channel_names(self) -> list[str]:
        """The input's channels: gray, or red, green, blue."""
        c = self.input_size[0]
        return ["gray"] if c == 1 else ["red", "green", "blue"] if c == 3 else [f"channel {i}" for i in range(c)]


def _public_name(dataset: str | None) -> str | None:
    """A dataset's name without the machine's folders: folder:/home/me/photos -> folder:photos."""
    if dataset and dataset.startswith("folder:"):
        return "folder:" + Path(dataset[len("folder:"):]).name
    return dataset


def _torch_model(predictor: Any) -> nn.Module | None:
    from cnnlab.training.run import Run

    return predictor.model if isinstance(predictor, Run) else None


def _spatial_layers(features: Any) -> list[FeatureLayer]:
    """Captured outputs that are maps wider than one pixel (a 1x1 map or a vector shows nothing)."""
    out = []
    for name, t in features.items():
        if t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1:
            out.append(FeatureLayer(name, features.types[name], features.kinds[name], tuple(t.shape[1:])))
    return out


def _pick_maps(result: Explained, features: Any, layer: str | None, channels: int) -> None:
    """The first `channels` maps of the chosen layer (default: the first one) as PNGs, each on its own scale."""
    if not result.layers:
        return
    names = [f.name for f in result.layers]
    if layer is None:
        layer = names[0]
    elif layer not in names:
        raise InvalidInput(f"no feature maps for layer {layer!r}; layers with spatial maps: {', '.join(names)}")
    result.layer = layer
    t = features[layer][0]
    for c in range(min(channels, t.shape[0])):
        arr, lo, hi = map_to_uint8(t[c])
        result.maps.append({"channel": c, "image": png_data_url(arr), "min": lo, "max": hi})


def input_notes(check: InputCheck, probs: torch.Tensor) -> dict[str, Any]:
    """What the API says about an input: whether it was inverted, and what is unlike the training images."""
    low = confidence_warning(float(probs.max()))
    return {"inverted": check.inverted, "warnings": check.warnings + ([low] if low else [])}


def top_classes(probs: torch.Tensor, classes: tuple[str, ...], k: int) -> list[dict[str, Any]]:
    """The k most probable classes: index, name and probability, most probable first."""
    from cnnlab.models.outputs import top_classes as ranked

    return [{"index": c.index, "class": c.name, "probability": c.probability} for c in ranked(probs, classes, k)]
