"""The optional runtimes an export needs (onnx, onnxruntime, onnxscript) and torch.jit's per-call warnings."""

from __future__ import annotations

import contextlib
import importlib
import re
import warnings
from typing import Iterator

from cnnlab.errors import CnnlabError

# torch.jit.* and the legacy ONNX exporter warn on every call in this torch; we say so once, in our own words.
_DEPRECATION = re.compile(r"`torch\.jit\.\w+` is deprecated|legacy TorchScript-based ONNX export|"
                          r"The feature will be removed")


def require_onnx(module: str = "onnxruntime"):
    """Import an optional ONNX dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CnnlabError(f"{module} is not installed: pip install 'cnnlab[onnx]'") from None


@contextlib.contextmanager
def quiet_jit() -> Iterator[list[str]]:
    """Hide the per-call deprecation warnings of torch.jit and the legacy exporter; yields the hidden messages."""
    hidden: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield hidden
    for w in caught:
        if _DEPRECATION.search(str(w.message)):
            hidden.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
