"""cnnlab: convolutional neural networks for image classification: learn the math, train, inspect, ship.

`import cnnlab` is light: torch and the rest load when a name below is first used.
"""

from importlib.metadata import PackageNotFoundError, version

from cnnlab.lazy import lazy_exports

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"

_EXPORTS = {
    "train": "cnnlab.training.api",
    "resume": "cnnlab.training.api",
    "TrainConfig": "cnnlab.training.config",
    "Callback": "cnnlab.training.callbacks",
    "load_run": "cnnlab.training.run",
    "runs": "cnnlab.training.runinfo",
    "compare": "cnnlab.training.compare",
    "get_model": "cnnlab.models",
    "list_models": "cnnlab.models",
    "register_model": "cnnlab.models",
    "summary": "cnnlab.inspect.summary",
    "explain": "cnnlab.apps.explain",
}
__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
