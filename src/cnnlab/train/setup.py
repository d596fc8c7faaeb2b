"""Everything a run needs, built from its config: device, data, model, optimizer, run folder."""

from __future__ import annotations

import platform
import random
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab._gc import gc_paused
from cnnlab.data import BatchLoader, Pipeline, get_dataset, parse_augment
from cnnlab.data.augment import Augment
from cnnlab.errors import CnnlabError
from cnnlab.train.tta import check_tta
from cnnlab.models import get_model, get_model_info, parse_input_size
from cnnlab.train.config import TrainConfig
from cnnlab.train.curves import CurvesPainter
from cnnlab.train.distributed import DistEnv, check_sync_bn, init_distributed, threads_per_process


@dataclass
class Setup:
    """The wired-up pieces of one run."""

    cfg: TrainConfig
    env: DistEnv
    device: torch.device
    net: nn.Module  # the model itself (its state_dict is what checkpoints hold)
    model: nn.Module  # what the loop calls: net, or net wrapped by DDP / torch.compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    pipeline: Pipeline
    augment: Augment
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    test_loader: BatchLoader
    classes: tuple[str, ...]
    dataset_name: str
    single_logit: bool
    run_dir: Path
    steps_per_epoch: int
    curves: CurvesPainter = field(default_factory=CurvesPainter)  # draws curves.png when the run finishes

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def pick_device(name: str) -> torch.device:
    """auto: CUDA if there is a GPU, else Apple's MPS, else the CPU; a requested device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda, but torch sees no CUDA GPU; use --device cpu (or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnlabError("--device mps, but this machine has no Apple GPU; use --device cpu (or auto)")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally insist on deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _val_size(cfg: TrainConfig) -> int | float | None:
    if cfg.val_size < 0:
        return None
    return cfg.val_size if 0 < cfg.val_size < 1 else int(cfg.val_size)


def load_splits(cfg: TrainConfig, image_size: tuple[int, int] | None):
    """(train, val or None, test) datasets for the config."""
    kw = dict(data_dir=cfg.data_dir, val_size=_val_size(cfg), image_size=image_size)
    train = get_dataset(cfg.dataset, "train", download=cfg.download, **kw)
    if 0 < cfg.subset < len(train):
        from cnnlab.data.registry import ImageData
        from cnnlab.data.split import stratified_split

        if not isinstance(train, ImageData):
            raise CnnlabError("--subset works for datasets held in memory, not streamed folders")
        _, keep = stratified_split(train.targets, cfg.subset, seed=cfg.seed)
        train = ImageData(train.images[keep], train.targets[keep], train.info, "train", train.indices[keep])
    val = get_dataset(cfg.dataset, "val", **kw) if _val_size(cfg) != 0 else None
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


def output_classes(cfg: TrainConfig, num_classes: int) -> tuple[int, bool]:
    """(outputs of the model, single logit?): one logit for two classes when asked or when the model has one."""
    info = get_model_info(cfg.model)
    single = cfg.single_logit or info.num_classes == 1
    if single and num_classes != 2:
        if cfg.single_logit:
            raise CnnlabError(f"--single-logit needs a two-class dataset; {cfg.dataset} has {num_classes} classes")
        single = False  # a one-logit model asked to learn many classes gets one output per class
    return (1 if single else num_classes), single


def normalization(cfg: TrainConfig, data_info, input_size) -> tuple[tuple, tuple]:
    """Mean/std: the pretrained weights' own, else the dataset's; (0, 1) with --no-normalize."""
    info = get_model_info(cfg.model)
    if not cfg.normalize:
        return (0.0,) * input_size[0], (1.0,) * input_size[0]
    if info.mean is not None and (cfg.weights or "none").lower() != "none":
        return tuple(info.mean), tuple(info.std)
    return tuple(data_info.mean), tuple(data_info.std)


def backbone_frozen(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the backbone is frozen during `epoch` (0-based): --freeze-backbone, or before --unfreeze-after."""
    if cfg.unfreeze_after:
        return epoch < cfg.unfreeze_after
    return cfg.freeze_backbone or cfg.feature_extraction


def build_optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    """Param groups: no weight decay on biases and norm layers; a backbone/head split for transfer learning."""
    head = set()
    if hasattr(net, "head_name"):
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
    with gc_paused():  # the first torch.optim optimizer imports torch._dynamo: ~150,000 objects, see cnnlab/_gc.py
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov and cfg.momentum > 0)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999))
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def run_name(cfg: TrainConfig) -> str:
    """<model>-<dataset>-<YYYYmmdd-HHMMSS>, the dataset of a folder named after the folder."""
    dataset = cfg.dataset
    if dataset.startswith("folder:"):
        dataset = "folder-" + (Path(dataset[7:]).name or "root")
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset)
    return f"{cfg.model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(cfg: TrainConfig, needed_bytes: int) -> Path:
    """Create the run folder and check, before training, that it is writable and the disk has room."""
    if cfg.out:
        path = Path(cfg.out)
    else:
        path = Path(cfg.runs_dir) / run_name(cfg)
        n = 1
        while path.exists():
            n += 1
            path = Path(cfg.runs_dir) / f"{run_name(cfg)}-{n}"
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CnnlabError(f"cannot write the run folder {path}: {exc.strerror or exc}. Choose another --out.") from None
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise CnnlabError(
            f"only {free / 2**20:.0f} MiB free on the disk of {path}; checkpoints of this run need about "
            f"{needed_bytes / 2**20:.0f} MiB. Free some space or choose another --out."
        )
    return path


def shared_run_dir(cfg: TrainConfig, env: DistEnv, needed_bytes: int) -> Path:
    """Rank 0 creates the run folder (its default name has a timestamp) and tells the other ranks its path."""
    path, error = None, None
    if env.is_main:
        try:
            path = prepare_run_dir(cfg, needed_bytes)
        except CnnlabError as exc:
            error = exc
    # Every rank gets the path or rank 0's error, so none waits forever for a folder that will not come.
    path, message = env.broadcast_object((str(path) if path else None, str(error) if error else None))
    if error is not None:
        raise error
    if message is not None:
        raise CnnlabError(f"rank 0 could not prepare the run folder: {message}")
    return Path(path)


def environment() -> dict[str, Any]:
    """Versions and machine, for config.json."""
    from cnnlab import __version__

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _installed_version("torchvision"),
        "numpy": np.__version__,
        "cnnlab": __version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _installed_version(package: str) -> str | None:
    """A package's installed version, read from its metadata: importing torchvision only to ask would cost
    0.1 s and 15 MiB per run (more when torch._dynamo is not loaded yet)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def build(cfg: TrainConfig, run_dir: Path | None = None) -> Setup:
    """Wire up a run: seed, device, datasets and loaders, model, optimizer, run folder."""
    device = pick_device(cfg.device)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise CnnlabError("--amp fp16 needs a CUDA GPU; on the CPU use --amp bf16 (or off)")
    env = init_distributed(device.type)
    # Forked before any work: it imports matplotlib while this process builds the optimizer (see curves.py).
    curves = CurvesPainter() if env.enabled else CurvesPainter().start()
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    if cfg.sync_bn and env.enabled:
        check_sync_bn(device)
    threads = threads_per_process(cfg.threads, env)  # N processes on a machine share its cores
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed, cfg.deterministic)

    info = get_model_info(cfg.model)
    # Folder datasets are decoded at the model's input size; built-in ones ignore this.
    image_size = parse_input_size(cfg.input_size)[-2:] if cfg.input_size else info.input_size[1:]
    with env.local_main_first():  # one process per machine downloads and fills the decode cache
        train_data, val_data, test_data = load_splits(cfg, tuple(image_size))
    data_info = train_data.info
    input_size = model_input_size(cfg, data_info.channels)
    classes = data_info.classes
    n_out, single = output_classes(cfg, len(classes))
    kwargs = dict(cfg.model_kwargs)
    if cfg.weights is not None:
        kwargs["weights"] = cfg.weights
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

    mean, std = normalization(cfg, data_info, input_size)
    pipeline = Pipeline.build(data_info.channels, input_size, mean, std)
    augment = parse_augment(cfg.augment, data_info)
    check_tta(cfg.tta, data_info.flip_ok, data_info.name)
    common = dict(device=device, channels_last=cfg.channels_last, num_workers=cfg.num_workers)
    train_loader = BatchLoader(train_data, cfg.batch_size, pipeline, augment=augment, shuffle=True,
                               drop_last=len(train_data) > cfg.batch_size * env.world_size, seed=cfg.seed,
                               rank=env.rank, world_size=env.world_size, **common)
    val_loader = BatchLoader(val_data, cfg.eval_batch_size, pipeline, **common) if val_data is not None else None
    test_loader = BatchLoader(test_data, cfg.eval_batch_size, pipeline, **common)

    model = net
    if env.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    if run_dir is None:
        # last.pt and best.pt, each with weights and up to two optimizer moments, plus a temp copy while writing.
        run_dir = shared_run_dir(cfg, env, needed_bytes=param_bytes * 3 * 3 + (16 << 20))
    return Setup(
        cfg=cfg,
        env=env,
        device=device,
        net=net,
        model=model,
        optimizer=build_optimizer(cfg, net),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16"),
        pipeline=pipeline,
        augment=augment,
        train_loader=train_loader,
        val_loader=val_loader,
        test_loader=test_loader,
        classes=classes,
        dataset_name=data_info.name,
        single_logit=single,
        run_dir=run_dir,
        steps_per_epoch=len(train_loader),
        curves=curves,
    )
