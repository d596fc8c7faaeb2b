"""Defaults that read the data: `choose`, a pure function from a dataset's profile (data/profile.py) to the settings
a user did not give, each with its reason and the line a run prints; `fill_auto` applies it to a config (what the user
or a recipe gave always wins). Each rule is stated where it is made (the constants below bound them); the
measurements behind them are in benchmarks/README.md, "Defaults that read the data".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from cnnlab.data.profile import DataProfile
from cnnlab.models import get_model_info, parse_input_size
from cnnlab.models.weights import PRETRAINED_EXTRA

SCRATCH_MODEL = "fastnet"  # a small BatchNorm CNN that trains from scratch in seconds on a CPU
PRETRAINED_BACKBONE = "efficientnet_lite0"  # offline ImageNet weights (the pretrained-backbone extra)
PRETRAINED_MIN_SIDE = 96  # photos smaller than this gain little from ImageNet features at 224
MIN_SIDE, MAX_SIDE = 28, 64  # fastnet's input side: its design size, and a CPU's limit for small data
TINY_VAL = 300  # fewer validation images than this: keep the final weights, train on them
TARGET_STEPS = 2500  # optimizer steps a small network from scratch needs to converge
MIN_EPOCHS, MAX_EPOCHS = 3, 100
PASS_BUDGET = 150_000  # image passes at 28x28 (fewer for larger images): about half a minute of CPU
SHIFT_MIN_EPOCHS = 8  # without validation, fewer passes than this: no shifts, crops or jitter (still fitting)
FIT_RATIO = 0.5  # training error at most this share of validation error: the network memorizes its images
FLATTEN_MAX_SIDE = 32  # glyph-like images up to this side: fastnet's last map is 4x4 or less, flattened
BATCH_MIN, BATCH_MAX, BATCHES_PER_EPOCH = 16, 128, 32
ADAMW_LR, SGD_LR, FINE_TUNE_LR, LR_BATCH = 3e-3, 0.05, 1e-3, 64  # peak rates at a batch of LR_BATCH


@dataclass
class AutoChoice:
    """The chosen settings (only those that were not given), a reason for each, and the line a run prints."""

    settings: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # the parts of the printed line, in order
    profile: dict[str, Any] = field(default_factory=dict)  # what was measured (DataProfile.to_dict())
    short_run: bool = False  # the augmentation was lightened for a run of few epochs

    def pick(self, given: Mapping[str, Any], name: str, value: Any, reason: str) -> Any:
        """`value` for `name` unless it was given (the given value is returned instead)."""
        if given.get(name) is not None:
            return given[name]
        self.settings[name], self.reasons[name] = value, reason
        return value

    @property
    def line(self) -> str:
        return "auto: " + ", ".join(self.notes) if self.notes else ""

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "chosen": {k: {"value": v, "reason": self.reasons[k]}
                                              for k, v in self.settings.items()}, "profile": self.profile}


def choose(profile: DataProfile, pretrained_available: bool = False,
           given: Mapping[str, Any] | None = None) -> AutoChoice:
    """The settings for `profile` that `given` (the user's and the recipe's, None where unset) leaves open."""
    given = dict(given or {})
    c = AutoChoice(profile=profile.to_dict())
    model, side, pretrained = _model(c, profile, pretrained_available, given)
    train_n, select, val_n = _validation(c, profile, given)
    batch = c.pick(given, "batch_size", _batch(train_n), f"about {BATCHES_PER_EPOCH} steps per epoch over "
                   f"{train_n:,} training images, {BATCH_MIN} to {BATCH_MAX}")
    _lr(c, given, batch, pretrained)
    epochs, steps = _epochs(c, given, train_n, batch, side)
    augment = _augment(c, profile, given, side, pretrained, None if given.get("budget") else epochs, val_n)
    _tta(c, given, augment)
    _describe(c, profile, model, epochs, steps, batch, augment, select)
    return c


def _model(c: AutoChoice, profile: DataProfile, pretrained_available: bool,
           given: Mapping[str, Any]) -> tuple[str, int, bool]:
    """(model, input side, pretrained?): fastnet at the images' own size (MIN_SIDE to MAX_SIDE); for photos of
    PRETRAINED_MIN_SIDE pixels or more, a linear head on a pretrained backbone's fixed features where its weights are
    on this machine (what transfers best from few images, in seconds)."""
    use_pretrained = profile.kind == "photo" and pretrained_available and profile.side >= PRETRAINED_MIN_SIDE
    if given.get("model") is None and use_pretrained:
        c.pick(given, "model", PRETRAINED_BACKBONE, f"photo-like images of {profile.side} px and ImageNet weights on "
               f"this machine: a linear head on pretrained features")
        c.pick(given, "feature_extraction", True, "photos: each embedded once by the pretrained backbone (cached), "
               "then a linear head fitted on those fixed features in seconds: what transfers best from few photos, "
               "and what scales to many")
        c.pick(given, "weights", "DEFAULT", "the backbone's ImageNet weights")
        return PRETRAINED_BACKBONE, min(get_model_info(PRETRAINED_BACKBONE).input_size[1:]), True
    missing = profile.kind == "photo" and profile.side >= PRETRAINED_MIN_SIDE and given.get("model") is None
    model = c.pick(given, "model", SCRATCH_MODEL, "a compact BatchNorm CNN that trains from scratch in seconds on a "
                   "CPU" + (f" (no ImageNet weights on this machine: {PRETRAINED_EXTRA} gives these photos pretrained "
                            f"features)" if missing else ""))
    if given.get("model") is not None and not given.get("input_size"):  # the user's model at its own size
        info = get_model_info(model)
        return model, min(info.input_size[1:]), info.mean is not None
    s = _side(c, profile, given)
    if given.get("model") is None:  # the chooser's CNN
        _scratch_layout(c, profile, given, s)
    return model, s, False


def _side(c: AutoChoice, profile: DataProfile, given: Mapping[str, Any]) -> int:
    """The input side: the user's, else the images' own within [MIN_SIDE, MAX_SIDE]."""
    if given.get("input_size"):
        return min(parse_input_size(given["input_size"])[-2:])
    s = max(MIN_SIDE, min(MAX_SIDE, 4 * round(profile.side / 4)))
    why = "the images' own size" if s == profile.side else (
        f"the images' {profile.side} px, {'enlarged' if s > profile.side else 'reduced'} to {s}")
    colour = "gray" if profile.channels == 1 else "colour"
    c.pick(given, "input_size", f"{profile.channels}x{s}x{s}", f"{why}; {colour}")
    return s


def _scratch_layout(c: AutoChoice, profile: DataProfile, given: Mapping[str, Any], side: int) -> None:
    """The from-scratch CNN's head: a linear layer over the whole last map (where each part of a centred glyph is)
    for glyph-like images up to FLATTEN_MAX_SIDE pixels, a global max pool otherwise; channels-last memory."""
    if profile.kind == "glyph" and side <= FLATTEN_MAX_SIDE and given.get("model_kwargs") is None:
        c.pick(given, "model_kwargs", {"head": "flatten"}, f"glyph-like images of {side} px: a linear layer over the "
               f"whole last map keeps where each stroke or part is")
    c.pick(given, "channels_last", True, "channels-last memory format: this CNN's training steps run 1.4-2x "
           "faster on a CPU")


def _validation(c: AutoChoice, profile: DataProfile, given: Mapping[str, Any]) -> tuple[int, str, int]:
    """(training images, weights kept, validation images): a tiny validation split is trained on and the final
    weights kept."""
    tiny = 0 < profile.val_images < TINY_VAL
    if tiny and given.get("val_size") is None and given.get("select") in (None, "last"):
        c.pick(given, "val_size", 0, f"{profile.val_images} validation images cannot pick an epoch (one image is "
               f"{100 / profile.val_images:.1g} points): they are trained on")
        c.pick(given, "select", "last", "the final weights of the decaying one-cycle schedule (no best-epoch "
               "selection on a tiny validation split)")
        folded = profile.train_images + profile.val_images
        return (min(profile.subset, folded) if profile.subset else folded), "last", 0
    if profile.val_images == 0 or tiny:
        select = c.pick(given, "select", "last", "the final weights of the decaying one-cycle schedule ("
                        + ("no validation split" if not profile.val_images else
                           f"{profile.val_images} validation images cannot pick an epoch") + ")")
        return profile.train_images, select, profile.val_images
    select = c.pick(given, "select", "best", f"the epoch with the best accuracy on {profile.val_images:,} "
                    f"validation images")
    return profile.train_images, select, profile.val_images


def _batch(train_n: int) -> int:
    """A power of two near train_n / BATCHES_PER_EPOCH, in [BATCH_MIN, BATCH_MAX]."""
    want = max(1, train_n // BATCHES_PER_EPOCH)
    return max(BATCH_MIN, min(BATCH_MAX, 2 ** int(math.log2(want))))


def _lr(c: AutoChoice, given: Mapping[str, Any], batch: int, pretrained: bool) -> float:
    """The peak rate at LR_BATCH images a batch, grown with the batch: its square root for Adam(W), linearly for
    SGD."""
    optimizer = given.get("optimizer") or "adamw"
    if optimizer == "sgd":
        return c.pick(given, "lr", round(SGD_LR * batch / LR_BATCH, 4), f"SGD: {SGD_LR:g} per {LR_BATCH} images "
                      f"in a batch, linear in the batch")
    base = FINE_TUNE_LR if pretrained else ADAMW_LR
    return c.pick(given, "lr", float(f"{base * math.sqrt(batch / LR_BATCH):.2g}"),
                  f"{optimizer}: {base:g} at a batch of {LR_BATCH}, times the square root of the batch's ratio")


def planned_epochs(train_n: int, batch: int, side: int) -> tuple[int, str]:
    """(epochs, why): enough for TARGET_STEPS steps, within [MIN_EPOCHS, MAX_EPOCHS] and the compute budget."""
    per_epoch = max(1, train_n // batch)
    epochs = math.ceil(TARGET_STEPS / per_epoch)
    why = f"{TARGET_STEPS:,} steps of {per_epoch} per epoch"
    if epochs > MAX_EPOCHS:
        epochs, why = MAX_EPOCHS, f"{TARGET_STEPS:,} steps would take {epochs} epochs: at most {MAX_EPOCHS}"
    budget = int(PASS_BUDGET * (MIN_SIDE / max(side, MIN_SIDE)) ** 2 / max(train_n, 1))
    if epochs > budget:
        epochs, why = budget, (f"{TARGET_STEPS:,} steps would pass {epochs * train_n:,} images: the compute budget "
                               f"is {PASS_BUDGET:,} at 28x28 (--epochs N to train longer)")
    if epochs < MIN_EPOCHS:
        epochs, why = MIN_EPOCHS, f"at least {MIN_EPOCHS} epochs"
    return epochs, why


def _epochs(c: AutoChoice, given: Mapping[str, Any], train_n: int, batch: int, side: int) -> tuple[int, int]:
    epochs, why = planned_epochs(train_n, batch, side)
    if given.get("budget"):  # replaced when the run starts by what fits the budget at the measured speed
        why = f"planned by --budget {given['budget']:g} s from the speed measured in the first steps"
    epochs = c.pick(given, "epochs", epochs, why)
    return epochs, epochs * max(1, train_n // batch)


def _augment(c: AutoChoice, profile: DataProfile, given: Mapping[str, Any], side: int, pretrained: bool,
             epochs: int | None, val_n: int) -> str:
    """A spec that keeps labels: flips only where safe, strengths in proportion to the input's side. With `val_n`
    validation images (TINY_VAL or more): flips alone until the run memorizes, then the rest; without: flips alone
    for a run of few passes (`epochs`; None: decided by the --budget's plan, see short_run_augment)."""
    if pretrained and (given.get("feature_extraction") or c.settings.get("feature_extraction")):
        return c.pick(given, "augment", "none", "features are computed once from the unchanged images")
    flip_ok = profile.flip_ok if profile.flip_ok is not None else profile.kind == "photo"
    if profile.kind == "glyph":
        spec = f"translate={max(1, round(side / 14))}"
        why = f"shifts of about 7% of the side ({profile.kind_reason})"
    elif side > MAX_SIDE:
        spec, why = "crop=0.5,jitter=0.2", "random-resized crops keeping at least half of the image, colour jitter"
    else:
        spec, why = f"translate={max(1, round(side / 8))},jitter=0.1", "shifts of an eighth of the side (pad and " \
                                                                      "crop), mild colour jitter"
    if flip_ok:
        spec, why = spec + ",flip", why + "; flips (" + ("the dataset keeps its labels when mirrored"
                                                         if profile.flip_ok else "photo-like images") + ")"
    else:
        why += "; no flips (" + ("glyph-like images: a mirror can change the class" if profile.kind == "glyph" else
                                 "the dataset's labels change when mirrored") + ")"
    if given.get("augment") is None and val_n >= TINY_VAL and (spec != short_run_spec(spec)
                                                               or given.get("augment_on_overfit")):
        c.pick(given, "augment_on_overfit", spec, f"{why}: added once the network memorizes its training images "
               f"(training error at most {FIT_RATIO:.0%} of the error on {val_n:,} validation images, in the first "
               f"half of the run); before, they would slow its fitting more than they regularise")
        return c.pick(given, "augment", short_run_spec(spec), "until the network memorizes its training images: "
                      + ("flips, which keep the labels" if flip_ok else "no augmentation (a mirror can change the "
                                                                          "class)"))
    if epochs is not None and epochs < SHIFT_MIN_EPOCHS and given.get("augment") is None:
        spec, why, c.short_run = short_run_spec(spec), short_run_reason(epochs, flip_ok), True
    return c.pick(given, "augment", spec, why)


def fits_beyond_validation(train_acc: float, val_acc: float, epoch: int, epochs: int) -> bool:
    """Whether, after `epoch` of `epochs`, the network memorizes its training images: its training error (the
    epoch's running figure) is at most FIT_RATIO of its validation error, with at least half of the run to come (later
    the decaying rate alone drives the training error down, and too few epochs remain for regularisers to pay)."""
    return epoch <= epochs / 2 and val_acc < 1.0 and 1.0 - train_acc <= FIT_RATIO * (1.0 - val_acc)


def _tta(c: AutoChoice, given: Mapping[str, Any], augment: str) -> None:
    """Flip TTA where the chosen augmentation mirrors images (--tta auto resolves a given augmentation alike); never
    for features computed once from the unmirrored images."""
    features = given.get("feature_extraction") or c.settings.get("feature_extraction")
    if "augment" in c.settings and "flip" in augment.split(",") and not features:
        c.pick(given, "tta", "flip", "trained on mirrored images: the final test averages each image's outputs with "
               "its mirror's (twice the test's time; --tta none to test without)")


def short_run_spec(spec: str) -> str:
    """What of an augmentation spec a short run, or a run before it memorizes, keeps: its flips."""
    return "flip" if "flip" in spec.split(",") else "none"


def short_run_reason(epochs: int, flips: bool) -> str:
    return (f"{epochs} pass{'es' if epochs != 1 else ''} over the data: the network is still fitting it, and shifts "
            f"would slow that more than they regularise (from {SHIFT_MIN_EPOCHS} epochs on)"
            + ("; flips, which keep the labels" if flips else "; no flips (a mirror can change the class)"))


def short_run_augment(auto: dict[str, Any] | None, epochs: int) -> tuple[str, dict[str, Any]] | None:
    """For a --budget plan of `epochs`: (the augmentation a short run gets, `auto` updated to say so) where the
    chooser picked the run's augmentation and a short run keeps less of it; None: the run keeps what it has."""
    chosen = (auto or {}).get("chosen", {}).get("augment")
    if chosen is None or epochs >= SHIFT_MIN_EPOCHS or chosen["value"] == short_run_spec(chosen["value"]):
        return None
    old, new = chosen["value"], short_run_spec(chosen["value"])
    kind = (auto.get("profile") or {}).get("kind", "glyph")
    auto = copy.deepcopy(auto)
    auto["chosen"]["augment"] = {"value": new, "reason": short_run_reason(epochs, new == "flip")}
    auto["line"] = auto["line"].replace(_augment_words(old, kind), _augment_words(new, kind)
                                        + f" (a run of {epochs} epoch{'s' if epochs != 1 else ''})")
    return new, auto


def _describe(c: AutoChoice, profile: DataProfile, model: str, epochs: int, steps: int, batch: int, augment: str,
              select: str) -> None:
    """The printed line: what was chosen, each with the short reason a user needs to override it."""
    s = c.settings
    if "model" in s or "input_size" in s:
        size = s.get("input_size") or "its own size"
        head = " (a linear head over its last map)" if (s.get("model_kwargs") or {}).get("head") == "flatten" else ""
        c.notes.append(f"{model} at {size}" + (" (ImageNet features)" if s.get("feature_extraction") else head))
        if "no ImageNet weights" in c.reasons.get("model", ""):
            c.notes.append(f"no ImageNet weights here ({PRETRAINED_EXTRA} gives photos pretrained features)")
    if "epochs" in s and "--budget" in c.reasons["epochs"]:
        c.notes.append(f"batches of {batch}, epochs planned for the --budget")
    elif "epochs" in s or "batch_size" in s:
        c.notes.append(f"{epochs} epochs (~{steps:,} steps of {batch})")
    if "lr" in s:
        c.notes.append(f"lr {s['lr']:g}")
    if "augment" in s:
        later = s.get("augment_on_overfit")
        c.notes.append(_augment_words(augment, profile.kind) + (" (a short run)" if c.short_run else "")
                       + (f" until it memorizes its training images, then {_augment_words(later, profile.kind)}"
                          if later else ""))
    if s.get("tta") == "flip":
        c.notes.append("tested with flip TTA")
    if "select" in s:
        c.notes.append("final weights kept" + (f" ({profile.val_images} validation images trained on: too few to "
                                               f"pick an epoch)" if s.get("val_size") == 0 else "")
                       if select == "last" else "best validation epoch kept")


def _augment_words(spec: str, kind: str) -> str:
    parts = dict(p.partition("=")[::2] for p in spec.split(",")) if spec != "none" else {}
    words = []
    if "translate" in parts:
        words.append(f"shifts of {parts['translate']} px")
    if "crop" in parts:
        words.append(f"crops of at least {float(parts['crop']):.0%}")
    if "jitter" in parts:
        words.append(f"colour jitter {parts['jitter']}")
    if "flip" in parts:
        words.append("flips")
    elif spec != "none":
        why = ("glyph-like images: a mirror can change the class" if kind == "glyph"
               else "the dataset's labels change when mirrored")
        words.append(f"no flips ({why}; --augment {spec},flip to allow)")
    return ", ".join(words) or "no augmentation"


def given_settings(cfg: Any) -> dict[str, Any]:
    """What a resolved TrainConfig fixes for the chooser: None where it is left to the data."""
    return {
        "model": None if cfg.model == "auto" else cfg.model, "input_size": cfg.input_size,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "epochs": cfg.epochs,
        "augment": None if cfg.augment == "auto" else cfg.augment,
        "augment_on_overfit": cfg.augment_on_overfit or None, "val_size": None if cfg.val_size == -1 else
        cfg.val_size, "select": None if cfg.select == "auto" else cfg.select, "optimizer": cfg.optimizer,
        "feature_extraction": cfg.feature_extraction or None, "weights": cfg.weights, "budget": cfg.budget or None,
        "model_kwargs": cfg.model_kwargs or None, "channels_last": cfg.channels_last,
        "tta": None if cfg.tta == "auto" else cfg.tta,
    }


def is_settled(cfg: Any) -> bool:
    """Whether nothing is left to choose."""
    given = given_settings(cfg)
    return all(given[k] is not None for k in ("model", "batch_size", "lr", "epochs", "augment", "select"))


def fill_auto(cfg: Any, pretrained_available: bool = False) -> tuple[Any, AutoChoice | None]:
    """(the config with every open setting chosen from its dataset's profile, the choice; None when nothing was
    open). The profile reads the dataset's info, or scans a folder and measures a sample of it."""
    import dataclasses

    from cnnlab.data.profile import profile_dataset

    if is_settled(cfg):
        return cfg, None
    given = given_settings(cfg)
    from cnnlab.training.config import val_size_arg

    profile = profile_dataset(cfg.dataset, cfg.data_dir, val_size_arg(cfg.val_size), cfg.subset)
    choice = choose(profile, pretrained_available, given)
    return dataclasses.replace(cfg, **choice.settings), choice
