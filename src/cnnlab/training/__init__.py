"""Training: the settings, the loop and its pieces, checkpoints, runs and recipes (each loaded on first use)."""

from cnnlab.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "cnnlab.training.config",
    "train": "cnnlab.training.api",
    "resume": "cnnlab.training.api",
    "fit": "cnnlab.training.runner",
    "Callback": "cnnlab.training.callbacks",
    "TrainingRun": "cnnlab.training.callbacks",
    "Change": "cnnlab.training.plan",
    "Plan": "cnnlab.training.plan",
    "train_one_epoch": "cnnlab.training.engine",
    "train_step": "cnnlab.training.engine",
    "evaluate": "cnnlab.training.inference",
    "Criterion": "cnnlab.training.loss",
    "Schedule": "cnnlab.training.schedule",
    "TrainState": "cnnlab.training.state",
    "Run": "cnnlab.training.run",
    "load_run": "cnnlab.training.run",
    "evaluate_run": "cnnlab.training.evaluation",
    "runs": "cnnlab.training.runinfo",
    "RunInfo": "cnnlab.training.runinfo",
    "compare": "cnnlab.training.compare",
    "Comparison": "cnnlab.training.compare",
    "EvalResult": "cnnlab.training.evaluation",
    "Recipe": "cnnlab.training.recipes",
    "get_recipe": "cnnlab.training.recipes",
    "list_recipes": "cnnlab.training.recipes",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
