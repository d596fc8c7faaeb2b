"""cnnlab: convolutional neural networks for image classification: learn the math, train, inspect, ship."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"

from cnnlab._gc import gc_paused as _gc_paused  # noqa: E402

with _gc_paused():  # torch's import creates ~400,000 long-lived objects: no point walking them during it
    from cnnlab.inspect.summary import summary  # noqa: E402
    from cnnlab.models import get_model, list_models, register_model  # noqa: E402
    from cnnlab.train import TrainConfig, load_run  # noqa: E402
    from cnnlab.train import train as train  # noqa: E402  (the function shadows the subpackage's name on purpose)

__all__ = ["TrainConfig", "__version__", "get_model", "list_models", "load_run", "register_model", "summary", "train"]
