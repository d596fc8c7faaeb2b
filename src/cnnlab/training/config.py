"""The training settings: one dataclass with commented defaults, from which the CLI options are generated."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.training.schedule import SCHEDULES

# Torch-free, so that building the command line imports no torch.
TTA_MODES = ("none", "flip")  # test-time augmentation (see tta.py)


def opt(default: Any, help: str, choices: tuple | None = None, resume: bool = False) -> Any:
    """A setting: its default, the help line the CLI shows, optional choices, and whether a resume may change it."""
    meta = {"help": help, "choices": choices, "resume": resume}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of a training run; defaults train a small CNN on the bundled digits in seconds."""

    # ---- what to train
    model: str = opt("lenet", "model name (see `cnnlab models`)")
    dataset: str = opt("digits", "dataset name (see `cnnlab datasets`) or folder:PATH of your own images")
    recipe: str | None = opt(None, "named preset (see `cnnlab recipes`); options you give override it")
    model_kwargs: dict = opt({}, "extra model arguments as JSON, e.g. '{\"pool2\": \"avg\"}'")
    input_size: str | None = opt(None, "model input as CxHxW (default: the model's size, the dataset's channels)")
    single_logit: bool = opt(False, "for two classes: one logit with sigmoid/BCE instead of two with softmax")
    weights: str | None = opt(None, "pretrained weights for torchvision backbones: DEFAULT, none, or a file")
    # ---- data
    data_dir: str | None = opt(None, "folder holding the datasets (default: $CNNLAB_DATA, else ~/.cache/cnnlab/data)",
                               resume=True)
    download: bool = opt(False, "download the dataset if it is missing (needs the internet)")
    val_size: float = opt(-1.0, "validation carve-out: a fraction (<1) or a count of training images; "
                                "0: none; -1: the dataset default (5,000 for MNIST-like datasets, else a tenth)")
    subset: int = opt(0, "train on a stratified subset of this many training images (0: all), for quick runs")
    augment: str = opt("auto", "augmentation: auto, none, or e.g. 'translate=2,flip,cutout=8,degrees=10'")
    normalize: bool = opt(True, "subtract the dataset mean and divide by its std (off: pixels in [0, 1])")
    tta: str = opt("none", "test-time augmentation of the final test: none, or flip (the mean of each image's "
                           "outputs and its mirror's; only where mirroring keeps the label)", choices=TTA_MODES)
    # ---- optimization
    epochs: int = opt(15, "passes over the training split", resume=True)
    batch_size: int = opt(64, "images per step (per process when distributed)")
    optimizer: str = opt("adamw", "optimizer", choices=("sgd", "adam", "adamw"))
    lr: float = opt(3e-3, "peak learning rate")
    momentum: float = opt(0.9, "SGD momentum (0: plain SGD); Adam's beta1")
    nesterov: bool = opt(False, "Nesterov momentum for SGD")
    weight_decay: float = opt(5e-4, "weight decay (not applied to biases and norm layers)")
    schedule: str = opt("onecycle", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = opt(0.0, "linear warm-up over this many epochs (any schedule)")
    step_epochs: float = opt(1.0, "step schedule: multiply the rate by --gamma every this many epochs")
    gamma: float = opt(0.7, "step schedule: the factor")
    label_smoothing: float = opt(0.0, "label smoothing for the cross-entropy (0.1 is common)")
    grad_clip: float = opt(0.0, "clip the gradient's global norm to this (0: off)")
    amp: str = opt("off", "mixed precision: bf16 or fp16 autocast (fp16 on CUDA only); auto: bf16 where the hardware "
                          "computes it natively (CPUs with AVX-512 BF16 or AMX, recent CUDA GPUs), else off",
                   choices=("off", "auto", "bf16", "fp16"))
    # ---- device and reproducibility
    device: str = opt("auto", "where to train", choices=("auto", "cpu", "cuda", "mps"), resume=True)
    seed: int = opt(0, "random seed: the same seed gives the same run")
    deterministic: bool = opt(False, "use only deterministic kernels (slower on GPU)")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)", resume=True)
    channels_last: bool = opt(False, "channels-last memory format (faster convolutions on some hardware)")
    compile: bool = opt(False, "torch.compile the model (pays off on long runs)")
    # ---- when to stop
    target_acc: float | None = opt(None, "stop once validation accuracy reaches this (0.99 or 99)", resume=True)
    patience: int = opt(0, "stop after this many epochs without a better validation accuracy (0: off)", resume=True)
    max_time: float = opt(0.0, "stop after this many seconds of training (0: no limit)", resume=True)
    # ---- output
    out: str | None = opt(None, "run folder (default: runs/<model>-<dataset>-<time>)")
    runs_dir: str = opt("runs", "parent folder of run folders when --out is not given")
    quiet: bool = opt(False, "print only the final result", resume=True)
    json: bool = opt(False, "print one JSON object per epoch and one at the end, for scripts", resume=True)
    tensorboard: bool = opt(False, "also log scalars and sample images for TensorBoard (run folder/tb)", resume=True)
    probe_every: int = opt(0, "every N epochs, record first-layer filters and feature maps for the report")
    eval_batch_size: int = opt(1000, "images per step when evaluating")
    num_workers: int = opt(2, "decoding processes for folders too large to keep in memory", resume=True)
    # ---- transfer learning
    freeze_backbone: bool = opt(False, "train only the new head of a pretrained backbone (its BatchNorm "
                                       "statistics stay fixed too)")
    unfreeze_after: int = opt(0, "train only the head for this many epochs, then fine-tune the whole network "
                                 "(implies --freeze-backbone; 0: never unfreeze)")
    backbone_lr_scale: float = opt(0.1, "the backbone's learning rate as a fraction of --lr once unfrozen")
    feature_extraction: bool = opt(False, "embed the images once with the frozen backbone (cached on disk, no "
                                          "augmentation), then fit only a linear head on them, in seconds")
    # ---- several processes
    nproc: int = opt(1, "train with this many processes on this machine (launches torchrun)")
    sync_bn: bool = opt(False, "synchronize BatchNorm statistics across processes")
    resume: str | None = opt(None, "continue the run in this folder (or checkpoint) exactly where it stopped")

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


def coerce(name: str, value: Any) -> Any:
    """Convert a CLI string or a Python value to the field's type, with a clear error."""
    if name not in FIELDS:
        known = ", ".join(FIELDS)
        raise CnnlabError(f"unknown training setting {name!r}; known settings: {known}")
    kind = _base_type(name)
    if value is None or kind is bool and isinstance(value, bool):
        return value
    try:
        if kind is dict:
            return json.loads(value) if isinstance(value, str) else dict(value)
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise CnnlabError(f"setting {name}={value!r}: expected {kind.__name__} ({exc})") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One CLI option per field of TrainConfig: `--batch-size`, `--no-normalize`, ...; defaults stay unset."""
    defaults = TrainConfig()
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = _base_type(name)
        default = getattr(defaults, name)
        help_text = f.metadata["help"]
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
            continue
        shown = json.dumps(default) if kind is dict else default
        parser.add_argument(flag, dest=name, default=None, choices=f.metadata["choices"],
                            type=str if kind is dict else kind, metavar=_metavar(name, kind),
                            help=f"{help_text} (default: {shown})")


def _metavar(name: str, kind: type) -> str:
    return {"model": "NAME", "dataset": "NAME", "recipe": "NAME", "out": "DIR", "resume": "RUN"}.get(
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


def validate(cfg: TrainConfig) -> None:
    """Reject settings that cannot work, with the fix in the message."""
    if cfg.epochs < 1:
        raise CnnlabError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1 or cfg.eval_batch_size < 1:
        raise CnnlabError("--batch-size and --eval-batch-size must be at least 1")
    if cfg.lr <= 0:
        raise CnnlabError(f"--lr must be positive, got {cfg.lr}")
    if cfg.target_acc is not None and cfg.target_acc > 1:
        cfg.target_acc = cfg.target_acc / 100.0  # 99 means 99%
    if cfg.feature_extraction and cfg.unfreeze_after:
        raise CnnlabError("--feature-extraction fits the head on fixed embeddings, so nothing can be unfrozen; "
                          "drop --unfreeze-after, or fine-tune with --freeze-backbone --unfreeze-after N instead")
    if cfg.feature_extraction and cfg.tta != "none":
        raise CnnlabError("--feature-extraction tests the head on cached embeddings of the unmirrored images; "
                          "drop --tta")
    if cfg.feature_extraction and cfg.nproc > 1:
        raise CnnlabError("--feature-extraction runs in one process (fitting the head takes seconds); drop --nproc")
    for name in ("optimizer", "schedule", "amp", "device", "tta"):
        choices = FIELDS[name].metadata["choices"]
        if getattr(cfg, name) not in choices:
            raise CnnlabError(f"--{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
