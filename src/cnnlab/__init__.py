"""cnnlab: convolutional neural networks for image classification: learn the math, train, inspect, ship."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"

import gc as _gc  # noqa: E402

# Importing torch creates some 400,000 long-lived objects; the cyclic garbage collector would walk them all
# several times during the import (about 0.25 s of CPU) to find almost no garbage. It resumes right after.
_gc_was_enabled = _gc.isenabled()
_gc.disable()
try:
    from cnnlab.inspect.summary import summary  # noqa: E402
    from cnnlab.models import get_model, list_models, register_model  # noqa: E402
    from cnnlab.train import TrainConfig, load_run  # noqa: E402
    from cnnlab.train import train as train  # noqa: E402  (the function shadows the subpackage's name on purpose)
finally:
    if _gc_was_enabled:
        _gc.enable()

__all__ = ["TrainConfig", "__version__", "get_model", "list_models", "load_run", "register_model", "summary", "train"]
