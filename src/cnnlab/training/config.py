"""The training settings: one dataclass with commented defaults, from which the CLI options are generated."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from cnnlab.errors import CnnlabError
from cnnlab.training.schedule import SCHEDULES

# Torch-free, so that building the command line imports no torch.
TTA_MODES = ("none", "flip")  # test-time augmentation (see tta.py)
TTA_CHOICES = ("auto",) + TTA_MODES  # a run's: auto is flip when its training mirrors images
CLASS_WEIGHTS = ("auto", "none", "balanced")  # weights of the classes in the training loss (see loss.py)
SELECT_MODES = ("auto", "best", "last")  # the weights a run keeps (see runner.is_better)
AUTO_WORD = ("epochs", "batch_size")  # number settings for which "auto" means unset (chosen from the data)


@dataclass(frozen=True)
class Range:
    """The valid values of a number setting: finite, from `low` to `high` (None: no bound), ends included unless
    `low_open` / `high_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return self.high is None or value < self.high or not self.high_open and value == self.high

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(t for t in (low, high) if t) or "a finite number"


POSITIVE, COUNT, AT_LEAST_1 = Range(0, low_open=True), Range(0), Range(1)
FRACTION = Range(0, 1, high_open=True)
SECONDS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "mins": 60,
           "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600}


def parse_duration(text: Any) -> float:
    """Seconds from 90, '60s', '2m', '1.5min' or '1h' (a number alone is seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    found = re.fullmatch(r"\s*([+-]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not found or found.group(2) not in SECONDS:
        raise ValueError("a duration is needed, e.g. 90, 60s, 2m, 1.5min or 1h")
    return float(found.group(1)) * SECONDS[found.group(2)]


def opt(default: Any, help: str, choices: tuple | None = None, resume: bool = False, valid: Range | None = None,
        words: tuple[str, ...] = (), parse: Callable[[Any], Any] | None = None) -> Any:
    """A setting: its default, the help line the CLI shows, optional choices or valid range, whether a resume may
    change it, the words it takes besides values of its type (lr: "auto"), and a parser of its text (durations)."""
    meta = {"help": help, "choices": choices, "resume": resume, "valid": valid, "words": words, "parse": parse}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of a training run. Those left "auto" (or unset) are chosen from the data when a run starts
    (training/auto.py): with no options, a small CNN on the bundled digits in seconds."""

    # ---- what to train
    model: str = opt("auto", "model name (see `cnnlab models`); auto: chosen from the data (fastnet, or a "
                             "pretrained backbone for larger photos when its weights are here)")
    dataset: str = opt("digits", "dataset name (see `cnnlab datasets`) or folder:PATH of your own images")
    recipe: str | None = opt(None, "named preset (see `cnnlab recipes`); options you give override it")
    model_kwargs: dict = opt({}, "extra model arguments as JSON, e.g. '{\"pool2\": \"avg\"}'")
    input_size: str | None = opt(None, "model input as CxHxW (default: with --model auto, the images' own size from "
                                       "28 to 64 px; else the model's size with the dataset's channels)")
    single_logit: bool = opt(False, "for two classes: one logit with sigmoid/BCE instead of two with softmax")
    weights: str | None = opt(None, "pretrained weights for torchvision backbones: DEFAULT, none, or a file")
    # ---- data
    data_dir: str | None = opt(None, "folder holding the datasets (default: $CNNLAB_DATA, else ~/.cache/cnnlab/data)",
                               resume=True)
    download: bool = opt(False, "download the dataset if it is missing (needs the internet)")
    val_size: float = opt(-1.0, "validation carve-out: a fraction (<1) or a count of training images; "
                                "0: none; -1: the dataset default (5,000 for MNIST-like datasets, else a tenth)")
    subset: int = opt(0, "train on a stratified subset of this many training images (0: all), for quick runs",
                      valid=COUNT)
    augment: str = opt("auto", "augmentation: none, e.g. 'translate=2,flip,cutout=8,degrees=10', or auto: chosen "
                               "from the data (shifts scaled to the image size; flips only for photo-like images)")
    augment_on_overfit: str = opt("", "augmentation to train with from the epoch after the network memorizes its "
                                      "training images (its training error at most half its validation error, in the "
                                      "first half of the run), e.g. 'translate=2'; empty: none; with --augment auto "
                                      "and a validation split of 300 images or more: the shifts (crops, jitter) auto "
                                      "chose, while training starts with flips alone")
    normalize: bool = opt(True, "subtract the dataset mean and divide by its std (off: pixels in [0, 1])")
    tta: str = opt("auto", "test-time augmentation of the final test: none, or flip (the mean of each image's "
                           "outputs and its mirror's; only where mirroring keeps the label); auto: flip when the "
                           "training augmentation mirrors images, else none", choices=TTA_CHOICES)
    # ---- optimization
    epochs: int | None = opt(None, "passes over the training split (default: auto, from a target number of "
                                   "optimizer steps)", resume=True, valid=AT_LEAST_1)
    batch_size: int | None = opt(None, "images per step, per process when distributed (default: auto, from the "
                                       "number of training images)", valid=AT_LEAST_1)
    optimizer: str = opt("adamw", "optimizer", choices=("sgd", "adam", "adamw"))
    lr: float | str | None = opt(None, "peak learning rate (default: chosen from the optimizer and the batch size); "
                                      "auto: the suggestion of a learning-rate range test run first (see `cnnlab "
                                      "lr-find`)", valid=POSITIVE, words=("auto",))
    momentum: float = opt(0.9, "SGD momentum (0: plain SGD); Adam's beta1", valid=FRACTION)
    nesterov: bool = opt(False, "Nesterov momentum for SGD")
    weight_decay: float = opt(5e-4, "weight decay (not applied to biases and norm layers)", valid=COUNT)
    schedule: str = opt("onecycle", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = opt(0.0, "linear warm-up over this many epochs (any schedule)", valid=COUNT)
    step_epochs: float = opt(1.0, "step schedule: multiply the rate by --gamma every this many epochs", valid=POSITIVE)
    gamma: float = opt(0.7, "step schedule: the factor", valid=POSITIVE)
    class_weights: str = opt("auto", "weigh each class's images in the training loss by n / (classes x the "
                                     "class's count) (balanced), or not (none); auto: balanced when the largest "
                                     "class has 1.5x the training images of the smallest or more",
                             choices=CLASS_WEIGHTS)
    label_smoothing: float = opt(0.0, "label smoothing for the cross-entropy (0.1 is common)", valid=FRACTION)
    grad_clip: float = opt(0.0, "clip the gradient's global norm to this (0: off)", valid=COUNT)
    amp: str = opt("off", "mixed precision: bf16 or fp16 autocast (fp16 on CUDA only); auto: bf16 where the hardware "
                          "computes it natively (CPUs with AVX-512 BF16 or AMX, recent CUDA GPUs), else off",
                   choices=("off", "auto", "bf16", "fp16"))
    select: str = opt("auto", "the weights kept as best.pt and tested: best (the epoch with the best validation "
                              "accuracy) or last (the final weights); auto: last when the validation split is under "
                              "300 images (then also trained on, unless --val-size is given)",
                      choices=SELECT_MODES)
    # ---- device and reproducibility
    device: str = opt("auto", "where to train", choices=("auto", "cpu", "cuda", "mps"), resume=True)
    seed: int = opt(0, "random seed: the same seed gives the same run", valid=Range(0, 2**63, high_open=True))
    deterministic: bool = opt(False, "use only deterministic kernels (slower on GPU)")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)", resume=True, valid=COUNT)
    channels_last: bool | None = opt(None, "channels-last memory format (faster convolutions on some hardware; default: "
                                           "on for the CNN that --model auto picks, else off)")
    compile: bool = opt(False, "torch.compile the model (pays off on long runs)")
    # ---- when to stop
    target_acc: float | None = opt(None, "stop once validation accuracy reaches this (0.99 or 99)", resume=True,
                                   valid=Range(0, 100, low_open=True))
    patience: int = opt(0, "stop after this many epochs without a better validation accuracy (0: off)", resume=True,
                        valid=COUNT)
    max_time: float = opt(0.0, "stop after this many seconds of training (0: no limit)", resume=True, valid=COUNT)
    budget: float = opt(0.0, "plan the run to end within this time (90, 60s, 2m, 1.5min): epochs and the schedule's "
                             "length from the speed of the first steps, validation and the final test included; "
                             "it decides --epochs (default: 0, off)", valid=COUNT, parse=parse_duration)
    checkpoint_every: float = opt(300.0, "also save a resumable checkpoint every this many seconds inside an epoch, so "
                                         "a killed run loses at most that (0: at epoch ends only)", resume=True,
                                  valid=COUNT)
    # ---- output
    out: str | None = opt(None, "run folder (default: runs/<model>-<dataset>-<time>)")
    overwrite: bool = opt(False, "replace the run already in --out (its files are deleted); without it such a "
                                 "folder is refused")
    runs_dir: str = opt("runs", "parent folder of run folders when --out is not given")
    quiet: bool = opt(False, "print only the final result", resume=True)
    json: bool = opt(False, "print one JSON object per epoch and one at the end, for scripts", resume=True)
    tensorboard: bool = opt(False, "also log scalars and sample images for TensorBoard (run folder/tb)", resume=True)
    probe_every: int = opt(0, "every N epochs, record first-layer filters and feature maps for the report", valid=COUNT)
    eval_batch_size: int = opt(1000, "images per step when evaluating", valid=AT_LEAST_1)
    num_workers: int = opt(0, "threads that decode the images of folders streamed from disk (0: one per CPU core)",
                           resume=True, valid=COUNT)
    # ---- transfer learning
    freeze_backbone: bool = opt(False, "train only the new head of a pretrained backbone (its BatchNorm "
                                       "statistics stay fixed too)")
    unfreeze_after: int = opt(0, "train only the head for this many epochs, then fine-tune the whole network "
                                 "(implies --freeze-backbone; 0: never unfreeze)", valid=COUNT)
    backbone_lr_scale: float = opt(0.1, "the backbone's learning rate as a fraction of --lr once unfrozen", valid=COUNT)
    feature_extraction: bool = opt(False, "embed the images once with the frozen backbone (cached on disk, no "
                                          "augmentation), then fit only a linear head on them, in seconds")
    # ---- several processes
    nproc: int = opt(1, "train with this many processes on this machine (launches torchrun)", valid=AT_LEAST_1)
    sync_bn: bool = opt(False, "synchronize BatchNorm statistics across processes")
    resume: str | None = opt(None, "continue the run in this folder (or checkpoint; last: the newest run) exactly "
                                   "where it stopped")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
RESUMABLE = tuple(name for name, f in FIELDS.items() if f.metadata["resume"])  # what `--resume` may change
_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(name: str) -> type:
    """int / float / str / bool / dict for a field, unwrapping Optional."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def coerce(name: str, value: Any) -> Any:
    """Convert a CLI string or a Python value to the field's type, with a clear error (nothing is rounded or
    guessed: 2.5 epochs or "maybe" for a yes/no setting are errors)."""
    if name not in FIELDS:
        known = ", ".join(FIELDS)
        raise CnnlabError(f"unknown training setting {name!r}; known settings: {known}")
    kind, meta = _base_type(name), FIELDS[name].metadata
    if value is None or kind is bool and isinstance(value, bool):
        return value
    if name in AUTO_WORD and isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, str) and value.strip().lower() in meta["words"]:
        return value.strip().lower()
    try:
        if meta["parse"] is not None:
            return meta["parse"](value)
        if kind is dict:
            value = json.loads(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise ValueError("a JSON object is needed, e.g. '{\"pool2\": \"avg\"}'")
            return dict(value)
        if kind is bool:
            return BOOLEANS[str(value).strip().lower()]
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("a whole number is needed")
        return kind(value)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        reason = "true or false" if kind is bool else str(exc)
        raise CnnlabError(f"setting {name}={value!r}: expected {kind.__name__} ({reason})") from None


def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One CLI option per field of TrainConfig (but those in `skip`): `--batch-size`, `--no-normalize`, ...; defaults
    stay unset."""
    defaults = TrainConfig()
    for name, f in FIELDS.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        kind = _base_type(name)
        default = getattr(defaults, name)
        help_text = f.metadata["help"]
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
            continue
        choices = f.metadata["choices"]
        shown = json.dumps(default) if kind is dict else default
        said = [f"one of {', '.join(choices)}"] if choices else []
        if default not in (None, "") and "(default:" not in help_text:  # a help line may say its default in words
            said.append(f"default: {shown}")
        as_text = kind is dict or f.metadata["words"] or f.metadata["parse"] or name in AUTO_WORD  # coerce() reads them
        parser.add_argument(flag, dest=name, default=None, choices=choices, type=str if as_text else kind,
                            metavar=None if choices else _metavar(name, kind),  # choices show as {a,b,c}
                            help=help_text + (f" ({'; '.join(said)})" if said else ""))


def _metavar(name: str, kind: type) -> str:
    return {"model": "NAME", "dataset": "NAME", "recipe": "NAME", "out": "DIR", "resume": "RUN", "data_dir": "DIR",
            "runs_dir": "DIR", "input_size": "CxHxW", "augment": "SPEC", "augment_on_overfit": "SPEC",
            "weights": "WEIGHTS", "lr": "LR|auto", "budget": "TIME"}.get(
        name, {int: "N", float: "X", str: "TEXT", dict: "JSON"}[kind]
    )


def explicit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user actually gave on the command line."""
    return {k: coerce(k, v) for k, v in vars(args).items() if k in FIELDS and v is not None}


def resolve(settings: dict[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """Defaults < recipe < explicit settings: the config a run uses."""
    from cnnlab.training.recipes import get_recipe

    settings = {k: coerce(k, v) for k, v in (settings or {}).items()}
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    recipe_name = settings.get("recipe", cfg.recipe)
    if recipe_name:
        for k, v in get_recipe(recipe_name).settings.items():
            setattr(cfg, k, coerce(k, v))
    for k, v in settings.items():
        setattr(cfg, k, v)
    validate(cfg)
    return cfg


def val_size_arg(val_size: float | None) -> int | float | None:
    """--val-size as `get_dataset` takes it: None for the dataset's default (-1), a fraction, or a whole count."""
    if val_size is None or val_size < 0:
        return None
    return val_size if 0 < val_size < 1 else int(val_size)


def validate(cfg: TrainConfig) -> None:
    """Reject settings that cannot work, with the valid range or the fix in the message."""
    for name, f in FIELDS.items():
        value, valid = getattr(cfg, name), f.metadata["valid"]
        if valid is not None and value is not None and value not in f.metadata["words"] and value not in valid:
            raise CnnlabError(f"--{name.replace('_', '-')} must be {valid}, got {value}")
    whole = math.isfinite(cfg.val_size) and float(cfg.val_size).is_integer() and cfg.val_size >= 1
    if not (cfg.val_size == -1 or 0 <= cfg.val_size < 1 or whole):
        raise CnnlabError(f"--val-size must be a fraction in [0, 1), a whole number of images, or -1 (the dataset's "
                          f"default), got {cfg.val_size}")
    if cfg.target_acc is not None and cfg.target_acc > 1:
        cfg.target_acc = cfg.target_acc / 100.0  # 99 means 99%
    if cfg.feature_extraction and cfg.unfreeze_after:
        raise CnnlabError("--feature-extraction fits the head on fixed embeddings, so nothing can be unfrozen; "
                          "drop --unfreeze-after, or fine-tune with --freeze-backbone --unfreeze-after N instead")
    if cfg.feature_extraction and cfg.tta == "flip":
        raise CnnlabError("--feature-extraction tests the head on cached embeddings of the unmirrored images; "
                          "drop --tta")
    if cfg.feature_extraction and cfg.augment_on_overfit:
        raise CnnlabError("--feature-extraction computes the features once from the unchanged images: nothing can be "
                          "augmented; drop --augment-on-overfit")
    if cfg.nproc > 1 and (cfg.lr == "auto" or cfg.budget):
        raise CnnlabError("--lr auto and --budget measure one process; run `cnnlab lr-find` (or a short run) first, "
                          "then give --nproc N with --lr VALUE and --epochs N")
    if cfg.feature_extraction and cfg.nproc > 1:
        raise CnnlabError("--feature-extraction runs in one process (fitting the head takes seconds); drop --nproc")
    if cfg.feature_extraction and cfg.probe_every:
        raise CnnlabError("--feature-extraction keeps the backbone's filters fixed: there is nothing for "
                          "--probe-every to follow; drop it")
    for name in ("optimizer", "schedule", "amp", "device", "tta", "class_weights", "select"):
        choices = FIELDS[name].metadata["choices"]
        if getattr(cfg, name) not in choices:
            raise CnnlabError(f"--{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
