"""`cnnlab explain`: what one image looks like to a model, what it predicts, and why: a folder of PNGs.

explain(run_or_model, image, out_dir) writes
  input.png          the image as the model sees it (its channels and size; pixels shown as blocks)
  predictions.png    the top-k class probabilities
  filters.png        the first conv layer's filters
  features-NN-*.png  the feature maps after every conv, activation and pool stage, a block of layers per file
  gradcam.png        the Grad-CAM overlay and saliency map for the predicted (or chosen) class
and returns {name: path}. A trained run and an untrained model go through the same code.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab.data.domain import confidence_warning
from cnnlab.data.images import ImageLike
from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError
from cnnlab.inspect.explanation import ImageExplanation, explain_image
from cnnlab.inspect.features import Features, select_layers
from cnnlab.inspect.layers import gradient_ready
from cnnlab.models import get_model, get_model_info, list_models
from cnnlab.models.outputs import top_classes
from cnnlab.training.predictor import known_domain
from cnnlab.training.run import Run, load_run
from cnnlab.viz.images import to_uint8, upscale
from cnnlab.viz.style import FIGURES_DIR, png_data_uri

DEFAULT_MEAN, DEFAULT_STD = 0.5, 0.25  # for an untrained model without normalization of its own: [0, 1] -> [-2, 2]
MAX_COLUMNS = 10  # feature-map layers per PNG: wider figures stop being readable
MIN_INPUT_SIDE = 224  # input.png is scaled up (nearest) to at least this many pixels on its short side


@dataclass
class Subject:
    """What explain looks at: a model, how an image reaches it, and what its outputs mean."""

    model: nn.Module
    pipeline: Pipeline
    classes: tuple[str, ...]
    name: str  # for titles: "lenet, run lenet-digits-..." or "resnet18, untrained (random weights, seed 0)"
    trained: bool
    outputs_are_probs: bool = False
    run_path: Path | None = None


class Explanation(dict):
    """name -> PNG path, in the order written; `.descriptions`, `.notes`, `.top`, `.target` say what they show."""

    def __init__(self, subject: Subject, out_dir: Path) -> None:
        super().__init__()
        self.subject = subject
        self.out_dir = out_dir
        self.descriptions: dict[str, str] = {}
        self.notes: list[str] = []
        self.top: list[tuple[str, float]] = []  # (class, probability), most probable first
        self.target: str | None = None  # the class Grad-CAM explains
        self.cam_layer: str | None = None
        self.inverted = False  # the image was inverted first (its background was the opposite of the training's)

    def add(self, name: str, path: Path, description: str) -> None:
        self[name] = path
        self.descriptions[name] = description

    def _repr_html_(self) -> str:
        """In Jupyter: the predictions, then each picture with what it shows."""
        top = ", ".join(f"{name} {p:.1%}" for name, p in self.top)
        parts = [f"<p><b>{html.escape(top)}</b>" + (f"; Grad-CAM explains {html.escape(self.target)}"
                                                      if self.target else "") + "</p>"]
        parts += [f"<p>{html.escape(note)}</p>" for note in self.notes]
        for name, path in self.items():
            if Path(path).suffix == ".png" and Path(path).is_file():
                parts.append(f"<figure><img src='{png_data_uri(Path(path).read_bytes())}' style='max-width:100%' "
                             f"alt='{html.escape(name)}'><figcaption>{html.escape(self.descriptions.get(name, name))}"
                             "</figcaption></figure>")
        return "\n".join(parts)


# ---------------------------------------------------------------- what to explain


def subject_from_run(run: Run) -> Subject:
    """A trained run: its best weights, its exact image pipeline (with what its training images looked like), its
    class names."""
    model = gradient_ready(run.model)
    status = run.status
    name = f"{run.spec.name}, run {run.path.name}" + (f" ({status})" if status not in ("completed", "unknown") else "")
    pipeline = run.pipeline
    if pipeline.domain is None:  # a run from before domains were recorded: its dataset's known polarity
        pipeline = dataclasses.replace(pipeline, domain=known_domain(run.dataset))
    return Subject(model, pipeline, tuple(run.classes), name, trained=True,
                   outputs_are_probs=run.outputs_are_probs, run_path=run.path)


def subject_from_model(model: str | nn.Module, in_chans: int | None = None,
                       input_size: Sequence[int] | None = None, seed: int = 0) -> Subject:
    """A model name (built untrained, random weights from `seed`) or a built model, at its size and normalization."""
    if isinstance(model, nn.Module):
        spec = getattr(model, "spec", None)
        if spec is None:
            raise CnnlabError(f"{type(model).__name__} has no .spec (input size): build it with cnnlab.get_model, "
                              "or explain a trained run")
        info, net, label, trained = get_model_info(spec.name), gradient_ready(model), spec.name, True
        size = tuple(spec.input_size)
    else:
        info = get_model_info(model)
        if in_chans is not None and in_chans not in (1, 3):
            raise CnnlabError(f"--in-chans must be 1 (gray) or 3 (RGB) for a photo, got {in_chans}")
        with torch.random.fork_rng(devices=[]):  # reproducible random filters, the caller's RNG left alone
            torch.manual_seed(seed)
            net = get_model(model, in_chans=in_chans, input_size=tuple(input_size) if input_size else None)
        label, size, trained = model, tuple(net.spec.input_size), False
    c = size[0]
    if c not in (1, 3):
        raise CnnlabError(f"{label} takes {c}-channel inputs; explain needs a 1- or 3-channel model (--in-chans)")
    mean = info.mean if info.mean is not None else (DEFAULT_MEAN,) * c
    std = info.std if info.std is not None else (DEFAULT_STD,) * c
    pipeline = Pipeline.build(c, size, tuple(mean), tuple(std))
    k = net.spec.num_classes
    classes = tuple(f"class {i}" for i in range(2 if k == 1 else k))
    about = "weights as given" if trained else f"untrained (random weights, seed {seed})"
    return Subject(net, pipeline, classes, f"{label}, {about}", trained=trained)


def as_subject(run_or_model: Any, in_chans: int | None = None, input_size: Sequence[int] | None = None,
               seed: int = 0) -> Subject:
    """A Subject from a Run, a run folder or checkpoint path, a model name, or a model built by get_model."""
    if isinstance(run_or_model, Subject):
        return run_or_model
    if isinstance(run_or_model, Run):
        return subject_from_run(run_or_model)
    if isinstance(run_or_model, nn.Module):
        return subject_from_model(run_or_model)
    if isinstance(run_or_model, (str, Path)):
        if Path(run_or_model).exists() or str(run_or_model) == "last":  # last: the newest run in runs/
            return subject_from_run(load_run(run_or_model))
        if isinstance(run_or_model, str) and run_or_model in list_models():
            return subject_from_model(run_or_model, in_chans, input_size, seed)
        raise CnnlabError(f"{run_or_model}: no such run folder or checkpoint, and no model of that name; give a "
                          "run folder (runs/...) or a model name (see `cnnlab models`)")
    raise CnnlabError(f"explain takes a run, a run folder, a model name or a model, got {type(run_or_model).__name__}")


def default_out_dir(subject: Subject, image: ImageLike) -> Path:
    """RUN/explain-<image stem> for a run; cnnlab-figures/explain-<model>-<image stem> for an untrained model."""
    stem = Path(image).stem if isinstance(image, (str, Path)) else "image"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "image"
    if subject.run_path is not None:
        return subject.run_path / f"explain-{stem}"
    return FIGURES_DIR / f"explain-{subject.model.spec.name}-{stem}"


# ---------------------------------------------------------------- choices


def resolve_class(target: int | str | None, classes: Sequence[str]) -> int | None:
    """A class index from an index or a class name (case-insensitive); None stays None."""
    if target is None:
        return None
    if isinstance(target, str) and not target.strip().lstrip("-").isdigit():
        lowered = [c.lower() for c in classes]
        if target.strip().lower() in lowered:
            return lowered.index(target.strip().lower())
        shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
        raise CnnlabError(f"unknown class {target!r}; give a class index 0..{len(classes) - 1} or a name: {shown}")
    idx = int(target)
    if not 0 <= idx < len(classes):
        raise CnnlabError(f"class index {idx} out of range: the model has {len(classes)} classes "
                          f"(0..{len(classes) - 1})")
    return idx


def resolve_layers(model: nn.Module, layers: str | Sequence[str] | None) -> list[str] | None:
    """Layer names from names or shell patterns ('layer1.*'), comma-separated or a list; None: every default layer."""
    if layers is None:
        return None
    items = [p.strip() for p in (layers.split(",") if isinstance(layers, str) else layers) if p.strip()]
    if not items:
        return None
    names = [n for n, _ in model.named_modules() if n]
    chosen: list[str] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            # Patterns pick among the conv, activation and pool layers: containers would repeat their last child.
            matched = [n for n in select_layers(model) if fnmatch.fnmatchcase(n, item)]
            if not matched:
                raise CnnlabError(f"no conv, activation or pool layer matches {item!r}; layers: {', '.join(names)}")
            chosen += matched
        else:
            chosen.append(item)  # select_layers checks the name and lists the available ones
    return list(dict.fromkeys(chosen))


def _spatial(features: Features) -> list[str]:
    """Captured layers whose output is a map wider than one pixel (a 1x1 map or a vector shows nothing)."""
    return [n for n, t in features.items() if t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1]


def group_layers(features: Features, max_columns: int = MAX_COLUMNS) -> list[tuple[str, list[str]]]:
    """(label, layer names) per PNG: whole conv stages, grouped by top-level block, at most `max_columns` each.

    LeNet's top-level layers make one group; a ResNet gives its stem, then layer1 ... layer4, one per file.
    """
    from cnnlab.viz.filters import feature_stages

    names = _spatial(features)
    if not names:
        return []
    stages = feature_stages(features, names)

    def block(name: str) -> str:
        head = name.split("#")[0]
        return head.split(".")[0] if "." in head else ""  # "" = a top-level layer: runs of them group together

    blocks: list[tuple[str, list[list[str]]]] = []
    for stage in stages:
        key = block(stage[0])
        if blocks and blocks[-1][0] == key:
            blocks[-1][1].append(stage)
        else:
            blocks.append((key, [stage]))
    groups: list[tuple[str, list[str]]] = []
    for key, block_stages in blocks:
        chunks: list[list[str]] = [[]]
        for stage in block_stages:
            if chunks[-1] and len(chunks[-1]) + len(stage) > max_columns:
                chunks.append([])
            chunks[-1].extend(stage)
        for i, chunk in enumerate(chunks, 1):
            label = key or (chunk[0] if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}")
            groups.append((label + (f" part {i} of {len(chunks)}" if len(chunks) > 1 else ""), chunk))
    # Small neighbours share a file (ResNet-9's prep and conv1 blocks): fewer, fuller figures.
    merged: list[tuple[str, list[str]]] = []
    for label, chunk in groups:
        if merged and len(merged[-1][1]) + len(chunk) <= max_columns:
            merged[-1] = (f"{merged[-1][0]}, {label}", merged[-1][1] + chunk)
        else:
            merged.append((label, chunk))
    return merged


# ---------------------------------------------------------------- the files


def save_input_png(image: torch.Tensor, path: Path, min_side: int = MIN_INPUT_SIDE) -> Path:
    """A [0, 1] (C, H, W) image as a PNG of exactly its pixels, each scaled up to an integer-sized block."""
    from cnnlab.files import atomic_path

    img = Image.fromarray(np.ascontiguousarray(upscale(to_uint8(image), min_side)))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def explain(
    run_or_model: Any,
    image: ImageLike,
    out_dir: str | Path | None = None,
    *,
    topk: int = 5,
    layers: str | Sequence[str] | None = None,
    target: int | str | None = None,
    channels: int = 8,
    max_columns: int = MAX_COLUMNS,
    in_chans: int | None = None,
    input_size: Sequence[int] | None = None,
    seed: int = 0,
    invert: bool = True,
) -> Explanation:
    """Write input, predictions, filters, feature-map and Grad-CAM PNGs for one image; return {name: path}.

    `run_or_model`: a Run, a run folder or checkpoint, a model name (untrained, random weights from `seed`;
    `in_chans`/`input_size` override its defaults), or a model from `cnnlab.get_model`. An image whose background
    is the opposite of a run's training images' is inverted first (unless `invert=False`); `.notes` say so, and
    say how the image is unlike the training images.
    """
    from cnnlab.viz import plot_filters

    subject = as_subject(run_or_model, in_chans, input_size, seed)
    # Bad input is refused before any file is written.
    layer_names = resolve_layers(subject.model, layers)
    select_layers(subject.model, layer_names)  # an unknown name lists the available ones
    cls = resolve_class(target, subject.classes)
    if cls not in (None, 1) and _single_logit(subject.model):
        raise CnnlabError(f"this model has one logit, the score of {subject.classes[1]!r}: Grad-CAM can explain "
                          f"only that class (--target {subject.classes[1]})")
    x, check = subject.pipeline.load_checked(image, invert)  # unreadable files raise BadImageError, a CnnlabError
    out = _make_out_dir(Path(out_dir) if out_dir is not None else default_out_dir(subject, image))
    result = Explanation(subject, out)
    result.inverted = check.inverted
    result.notes += check.notes()
    if not subject.trained:
        result.notes.append("the model is untrained (random weights): its predictions are meaningless; the filters "
                            "and feature maps show what random convolutions do to the image")
    shown = subject.pipeline.denormalize(x)[0]
    c, h, w = x.shape[1:]
    result.add("input", save_input_png(shown, out / "input.png"),
               f"the image as the model sees it: {c}x{h}x{w}, {'gray' if c == 1 else 'RGB'}")
    seen = explain_image(subject.model, x, layers=layer_names, target=cls, outputs_are_probs=subject.outputs_are_probs,
                         with_saliency=True)
    _predictions(result, shown, seen.probs, topk, out)
    low = confidence_warning(float(seen.probs.max())) if subject.trained else None
    result.notes += [low] if low else []
    if not any(isinstance(m, nn.Conv2d) for m in subject.model.modules()):
        result.notes.append(f"{subject.name} has no conv layer: no filters, feature maps or Grad-CAM to show")
        return result
    w0 = next(m for m in subject.model.modules() if isinstance(m, nn.Conv2d)).weight
    result.add("filters", _save(plot_filters(subject.model), out / "filters.png"),
               f"first conv layer: {w0.shape[0]} filters of {'x'.join(map(str, w0.shape[1:]))}")
    _feature_maps(result, seen.features, channels, max_columns, out)
    _gradcam(result, seen, shown, topk, out)
    return result


def _make_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create the output folder {out}: {exc.strerror or exc}; choose another --out") \
            from None
    return out


def _single_logit(model: nn.Module) -> bool:
    spec = getattr(model, "spec", None)
    return spec is not None and spec.num_classes == 1


def _save(fig: Any, path: Path) -> Path:
    from cnnlab.viz import save_figure

    return save_figure(fig, path)


def _predictions(result: Explanation, shown: torch.Tensor, probs: torch.Tensor, topk: int, out: Path) -> None:
    from cnnlab.viz import plot_predictions

    classes = result.subject.classes
    result.top = [(c.name, c.probability) for c in top_classes(probs, classes, topk)]
    title = result.subject.name + ("" if result.subject.trained else "\nthese predictions are meaningless")
    fig = plot_predictions(shown, probs.numpy(), list(classes), topk=len(result.top), title=title)
    result.add("predictions", _save(fig, out / "predictions.png"), f"top-{len(result.top)} class probabilities")


def _feature_maps(result: Explanation, features: Features, channels: int, max_columns: int, out: Path) -> None:
    from cnnlab.viz import plot_feature_maps

    groups = group_layers(features, max_columns)
    if not groups:
        result.notes.append("none of the chosen layers outputs a spatial map: no feature-map figure")
        return
    for i, (label, names) in enumerate(groups, 1):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label.replace(" part ", "-").replace(" of ", "of")).strip("-")
        title = f"feature maps {i}/{len(groups)}: {label} (up to {channels} channels per layer)"
        fig = plot_feature_maps(features, layers=names, channels=channels, max_layers=len(names), title=title)
        shapes = features[names[-1]].shape
        result.add(f"features-{i:02d}", _save(fig, out / f"features-{i:02d}-{slug}.png"),
                   f"{len(names)} layers, {names[0]} ... {names[-1]}; last map {shapes[1]}x{shapes[2]}x{shapes[3]}")


def _gradcam(result: Explanation, seen: ImageExplanation, shown: torch.Tensor, topk: int, out: Path) -> None:
    from cnnlab.viz import plot_explanation

    subject = result.subject
    name = subject.classes[seen.target]
    result.target, result.cam_layer = name, seen.cam_layer
    fig = plot_explanation(shown, seen.heatmap, seen.saliency, seen.probs.numpy(), list(subject.classes), topk=topk,
                           target_name=name, layer_name=seen.cam_layer, title=f"why {name}?  {subject.name}")
    result.add("gradcam", _save(fig, out / "gradcam.png"), f"Grad-CAM at {seen.cam_layer} and saliency, for {name}")
