"""A run's pieces, built from its plan: device, data, model, loss, optimizer, schedule, run folder (`build`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data import BatchLoader, DatasetInfo, Pipeline, get_dataset, parse_augment
from cnnlab.data.augment import Augment
from cnnlab.data.domain import training_domain
from cnnlab.data.split import stratified_split
from cnnlab.errors import CnnlabError
from cnnlab.models import get_model, get_model_info, parse_input_size
from cnnlab.training.config import TrainConfig, val_size_arg
from cnnlab.training.console import Printer
from cnnlab.training.distributed import DistEnv
from cnnlab.training.features import embed_splits
from cnnlab.training.loss import Criterion, class_weights
from cnnlab.training.plan import Plan
from cnnlab.training.process import resolve_amp, start_process
from cnnlab.training.rundir import RunLock, checkpoint_bytes, shared_run_dir
from cnnlab.training.schedule import Schedule
from cnnlab.training.tta import check_tta, resolve_tta


@dataclass
class RunData:
    """The splits as batches, and how images become the model's input."""

    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader
    pipeline: Pipeline  # channels, size, normalization: the same in training and in prediction
    augment: Augment
    info: DatasetInfo  # classes, name, channels, which augmentations keep the labels
    embedded: dict[str, Any] | None = None  # feature extraction: the splits are embeddings (seconds, size, cache)


class Classifier:
    """The complete model a run produces, as its checkpoints hold it.

    Usually the trained network itself. With feature extraction the network trained is a head on cached
    embeddings (`training/features.py`): it is folded into the backbone's own head when the weights are read, and
    taken back out of it when they are loaded.
    """

    def __init__(self, module: nn.Module, head: Any = None) -> None:
        self.module = module
        self.head = head  # None, or an object with fold() and unfold() (see features.py)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.head is not None:
            self.head.fold()
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
        if self.head is not None:
            self.head.unfold()


@dataclass
class Job:
    """The built pieces of one run, as `fit` uses them (train_one_epoch and evaluate take them one by one); a
    context manager that lets go of the run folder's lock on exit."""

    plan: Plan  # what the run is to do; the runner replaces it when a callback changes the run (`follow`)
    env: DistEnv
    device: torch.device
    net: nn.Module  # the network that is trained
    model: nn.Module  # what the loop calls: net, or net wrapped by DDP / torch.compile
    classifier: Classifier  # the complete model checkpoints hold (usually net itself)
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Schedule
    data: RunData
    run_dir: Path | None  # None for a probe (built to be measured, never trained)
    lock: RunLock | None = None  # held on the run folder while this process writes it (the main process only)

    @property
    def cfg(self) -> TrainConfig:
        return self.plan.cfg

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.lock is not None:
            self.lock.release()


# ---------------------------------------------------------------- data


def load_splits(cfg: TrainConfig, image_size: tuple[int, int] | None, out: Printer):
    """(train, val or None, test) datasets for the config."""
    # Feature extraction uses each image once (to embed it, and the embeddings are cached): a folder streams.
    kw = dict(data_dir=cfg.data_dir, val_size=val_size_arg(cfg.val_size), image_size=image_size,
              stream=cfg.feature_extraction)
    train = get_dataset(cfg.dataset, "train", download=cfg.download, **kw)
    if 0 < cfg.subset < len(train):
        if cfg.subset < len(train.classes):
            out.warn(f"--subset {cfg.subset} is smaller than the {len(train.classes)} classes of {cfg.dataset}: some "
                     f"classes get no training image")
        train = train.subset(stratified_split(train.targets, cfg.subset, seed=cfg.seed)[1])
    val = get_dataset(cfg.dataset, "val", **kw) if val_size_arg(cfg.val_size) != 0 else None
    if val is not None and len(val) == 0:  # a carve-out of 0 images: no validation, rather than 0% every epoch
        out.warn(f"{cfg.dataset} has too few training images for a validation split: the best epoch is chosen on "
                 f"the training split")
        val = None
    test = get_dataset(cfg.dataset, "test", **kw)
    return train, val, test


def model_input_size(cfg: TrainConfig, dataset_channels: int) -> tuple[int, int, int]:
    """The model's (C, H, W): --input-size, else the model's own size with the dataset's channels."""
    info = get_model_info(cfg.model)
    if cfg.input_size:
        size = parse_input_size(cfg.input_size)
        return tuple(size) if len(size) == 3 else (dataset_channels, *size)
    # Pretrained backbones need the channels their weights were trained on.
    channels = info.input_size[0] if info.mean is not None else dataset_channels
    return (channels, *info.input_size[1:])


def normalization(cfg: TrainConfig, data_info: DatasetInfo, input_size) -> tuple[tuple, tuple]:
    """Mean/std: the pretrained weights' own, else the dataset's; (0, 1) with --no-normalize."""
    info = get_model_info(cfg.model)
    if not cfg.normalize:
        return (0.0,) * input_size[0], (1.0,) * input_size[0]
    if info.mean is not None and (cfg.weights or "none").lower() != "none":
        return tuple(info.mean), tuple(info.std)
    return tuple(data_info.mean), tuple(data_info.std)


def build_data(cfg: TrainConfig, env: DistEnv, device: torch.device, out: Printer) -> RunData:
    """Splits -> loaders: the training one shuffled and augmented, each rank its share; the others in order."""
    # Folder datasets are decoded at the model's input size; built-in ones ignore this.
    size = parse_input_size(cfg.input_size)[-2:] if cfg.input_size else get_model_info(cfg.model).input_size[1:]
    with env.local_main_first():  # one process per machine downloads and fills the decode cache
        train, val, test = load_splits(cfg, tuple(size), out)
    info = train.info
    input_size = model_input_size(cfg, info.channels)
    # The training images' polarity and statistics travel with the pipeline: prediction inverts and warns by them.
    pipeline = Pipeline.build(info.channels, input_size, *normalization(cfg, info, input_size),
                              domain=training_domain(train))
    augment = parse_augment(cfg.augment, info)
    common = dict(device=device, channels_last=cfg.channels_last, num_workers=cfg.num_workers)
    return RunData(
        train=BatchLoader(train, cfg.batch_size, pipeline, augment=augment, shuffle=True,
                          drop_last=len(train) > cfg.batch_size * env.world_size, seed=cfg.seed,
                          rank=env.rank, world_size=env.world_size, **common),
        val=BatchLoader(val, cfg.eval_batch_size, pipeline, **common) if val is not None else None,
        test=BatchLoader(test, cfg.eval_batch_size, pipeline, **common),
        pipeline=pipeline, augment=augment, info=info,
    )


# ---------------------------------------------------------------- model, loss, optimizer, schedule


def output_classes(cfg: TrainConfig, num_classes: int) -> tuple[int, bool]:
    """(outputs of the model, single logit?): one logit for two classes when asked or when the model has one."""
    info = get_model_info(cfg.model)
    single = cfg.single_logit or info.num_classes == 1
    if single and num_classes != 2:
        if cfg.single_logit:
            raise CnnlabError(f"--single-logit needs a two-class dataset; {cfg.dataset} has {num_classes} classes")
        single = False  # a one-logit model asked to learn many classes gets one output per class
    return (1 if single else num_classes), single


def backbone_frozen(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the backbone is frozen during `epoch` (0-based): --freeze-backbone, or before --unfreeze-after."""
    if cfg.unfreeze_after:
        return epoch < cfg.unfreeze_after
    return cfg.freeze_backbone or cfg.feature_extraction


def build_model(cfg: TrainConfig, data: RunData, env: DistEnv, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(net, model): the registry's model for the data, on the device; model is net, or net wrapped by DDP and
    torch.compile."""
    n_out, _ = output_classes(cfg, len(data.info.classes))
    kwargs = dict(cfg.model_kwargs)
    if cfg.weights is not None:
        kwargs["weights"] = cfg.weights
    input_size = (data.pipeline.channels, *data.pipeline.size)
    net = get_model(cfg.model, num_classes=n_out, input_size=input_size, **kwargs)
    if backbone_frozen(cfg, epoch=0):
        from cnnlab.models.backbones import freeze_backbone

        # Before DDP wraps the model: it registers the trainable parameters once, at construction.
        freeze_backbone(net, True)
        if cfg.unfreeze_after and env.enabled:
            raise CnnlabError("--unfreeze-after needs one process: DDP registers the trainable parameters once, so "
                              "an unfrozen backbone would not be synchronized; drop --nproc, or keep the backbone "
                              "frozen with --freeze-backbone alone")
    if cfg.sync_bn and env.enabled:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = net
    if env.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return net, model


def set_train_mode(net: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """Training mode for `epoch`, the backbone frozen (weights and BatchNorm statistics) while the config says so."""
    net.train()
    if backbone_frozen(cfg, 0) and not cfg.feature_extraction:  # feature extraction trains a head alone
        from cnnlab.models.backbones import freeze_backbone

        # Decided from the epoch, not toggled once, so a run resumed after --unfreeze-after is unfrozen too.
        freeze_backbone(net, backbone_frozen(cfg, epoch))


def build_optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    """Param groups: no weight decay on biases and norm layers; a backbone/head split for transfer learning."""
    head = set()
    if getattr(net, "head_names", None):
        from cnnlab.models.backbones import head_parameters

        head = {id(p) for p in head_parameters(net)}
    groups: dict[tuple[bool, bool], list] = {}
    for p in net.parameters():
        is_backbone = bool(head) and id(p) not in head
        groups.setdefault((p.ndim <= 1, is_backbone), []).append(p)
    params = [
        {"params": ps, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
         "lr_scale": cfg.backbone_lr_scale if backbone and cfg.unfreeze_after else 1.0}
        for (no_decay, backbone), ps in groups.items()
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=base_lr(cfg), momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=base_lr(cfg), betas=(cfg.momentum, 0.999))
    return torch.optim.AdamW(params, lr=base_lr(cfg), betas=(cfg.momentum, 0.999))


STAND_IN_LR = 1e-3  # the optimizer's rate in a probe of --lr auto (the range test sets every step's rate itself)


def base_lr(cfg: TrainConfig) -> float:
    """--lr, as the plan settled it; a stand-in in the probe that --lr auto's range test runs on."""
    return STAND_IN_LR if cfg.lr == "auto" else cfg.lr


def build_schedule(plan: Plan, steps_per_epoch: int) -> Schedule:
    """The learning rate of every step of the run: the plan's rate, over the plan's steps (its epochs', or the
    --budget plan's)."""
    cfg = plan.cfg
    return Schedule(cfg.schedule, base_lr(cfg), total_steps=plan.total_steps(steps_per_epoch),
                    warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
                    step_size=max(1, round(cfg.step_epochs * steps_per_epoch)), gamma=cfg.gamma)


def build_criterion(cfg: TrainConfig, data: RunData, single: bool) -> Criterion:
    """The loss, its class weights from the training split's class counts (all of it, whatever this rank's share),
    and why it weighs them so."""
    counts = torch.bincount(data.train.targets.cpu().long(), minlength=len(data.info.classes)).tolist()
    weights, why = class_weights(cfg.class_weights, counts)
    return Criterion(single_logit=single, label_smoothing=cfg.label_smoothing, class_weights=weights,
                     weights_why=why)


def embedded_data(cfg: TrainConfig, data: RunData, net: nn.Module, env: DistEnv, device: torch.device,
                  out: Printer) -> tuple[RunData, nn.Module]:
    """--feature-extraction: the splits as the frozen backbone's embeddings (cached on disk, computed once from the
    unaugmented images), and the linear head that is trained on them."""
    from cnnlab.models.backbones import pretrained_backbones

    if not getattr(net, "head_names", None):
        raise CnnlabError(f"--feature-extraction needs a pretrained backbone with a replaceable head "
                          f"({', '.join(pretrained_backbones())}); {cfg.model} has none: train it normally")
    if env.enabled:
        raise CnnlabError("--feature-extraction runs in one process (fitting the head takes seconds); drop --nproc")
    loaders, head, report = embed_splits(cfg, net, {"train": data.train, "val": data.val, "test": data.test},
                                         data.pipeline, device, out)
    return dataclasses.replace(data, **loaders, augment=Augment(), embedded=report), head


# ---------------------------------------------------------------- all of it


def build(plan: Plan, run_dir: Path | None = None, *, folder: bool = True, out: Printer | None = None) -> Job:
    """Wire up a run from its plan: data -> model -> loss -> optimizer -> schedule -> run folder (a new one, or
    `run_dir` to resume it), locked for this process. `folder=False`: a probe to measure, with no run folder."""
    cfg = plan.cfg
    out = out or Printer(cfg)
    device, env = start_process(cfg)
    cfg = dataclasses.replace(cfg, amp=resolve_amp(cfg.amp, device))  # what ran is what config.json records
    data = build_data(cfg, env, device, out)
    check_augment_on_overfit(cfg.augment_on_overfit, data)
    tta = resolve_tta(cfg.tta, data.augment.flip, cfg.feature_extraction)  # auto: flip where training mirrors
    cfg = dataclasses.replace(cfg, tta=check_tta(tta, data.info.flip_ok, data.info.name))
    net, model = build_model(cfg, data, env, device)
    classifier = Classifier(net)
    if cfg.feature_extraction:
        data, head = embedded_data(cfg, data, net, env, device, out)
        classifier, net, model = Classifier(net, head=head), head, head
    _, single = output_classes(cfg, len(data.info.classes))
    plan = dataclasses.replace(plan, cfg=cfg)
    run_dir, lock = (shared_run_dir(cfg, env, needed_bytes=checkpoint_bytes(classifier.module), existing=run_dir)
                     if folder else (None, None))
    return Job(plan=plan, env=env, device=device, net=net, model=model, classifier=classifier,
               criterion=build_criterion(cfg, data, single), optimizer=build_optimizer(cfg, net),
               scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16"),
               schedule=build_schedule(plan, len(data.train)), data=data, run_dir=run_dir, lock=lock)


def follow(job: Job, plan: Plan) -> None:
    """Make a built run follow a changed plan: the pieces a plan may change once built (the schedule's rate and
    length, the training augmentation) are made again from it. The runner calls it for a callback's change."""
    if plan.cfg.augment != job.cfg.augment:
        augment = parse_augment(plan.cfg.augment, job.data.info)
        job.data.augment = augment
        job.data.train.augment = augment if augment.active else None
    job.plan = plan
    job.schedule = build_schedule(plan, len(job.data.train))


def check_augment_on_overfit(spec: str, data: RunData) -> None:
    """A spec for --augment-on-overfit is checked when the run starts, not when its network memorizes."""
    if not spec:
        return
    parse_augment(spec, data.info)
    if data.val is None:
        raise CnnlabError("--augment-on-overfit watches the validation split, and this run has none (--val-size 0, "
                          "or a split too small to keep); give the augmentation as --augment SPEC instead")


def describe(job: Job) -> dict[str, Any]:
    """What the plan turned into (config.json's "resolved"): sizes, classes, normalization, device."""
    whole, data, plan = job.classifier.module, job.data, job.plan
    return {
        "input_size": list(whole.spec.input_size),
        "num_outputs": whole.spec.num_classes,
        "single_logit": job.criterion.single_logit,
        "classes": list(data.info.classes),
        "class_weights": {"weights": list(job.criterion.class_weights or []) or None,
                          "why": job.criterion.weights_why},
        "dataset": data.info.name,
        "train_images": data.train.num_samples * job.env.world_size,
        "val_images": len(data.val.targets) if data.val else 0,
        "test_images": len(data.test.targets),
        "pipeline": data.pipeline.to_dict(),
        "augment": data.augment.describe(),
        "device": str(job.device),
        "world_size": job.env.world_size,
        "parameters": sum(p.numel() for p in whole.parameters()),
        "steps_per_epoch": len(data.train),
        "weights": getattr(whole, "weights_info", None),  # where a torchvision backbone's weights came from
        **({"choices": dict(plan.choices)} if plan.choices else {}),
        **({"budget": plan.budget.to_dict()} if plan.budget is not None else {}),
        **({"changes": list(plan.changes)} if plan.changes else {}),
    }
