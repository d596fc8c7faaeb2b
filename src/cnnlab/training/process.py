"""The process a run trains in: its device (CPU, CUDA, MPS), its place in a torchrun job, its threads when asked,
its mixed precision, and the seeds that make the run repeatable."""

from __future__ import annotations

import random

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.training.config import TrainConfig
from cnnlab.training.distributed import DistEnv, check_sync_bn, init_distributed, threads_per_process


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


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast a run uses. "auto" is bf16 only where the hardware computes it natively: elsewhere bf16 is
    emulated and slower than float32 (fast-mnist's epoch took 7.5x as long on an AVX2-only CPU, measured)."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    if device.type == "cpu":
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "off"  # oneDNN: AVX-512 BF16 or AMX
    return "off"


def start_process(cfg: TrainConfig) -> tuple[torch.device, DistEnv]:
    """The device, this process's place in a torchrun job, its CPU threads (only when asked or shared), the seed."""
    device = pick_device(cfg.device)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise CnnlabError("--amp fp16 needs a CUDA GPU; on the CPU use --amp bf16 (or off)")
    env = init_distributed(device.type)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    if cfg.sync_bn and env.enabled:
        check_sync_bn(device)
    threads = threads_per_process(cfg.threads, env)  # --threads, or N processes sharing a machine's cores
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed, cfg.deterministic)
    return device, env
