"""Training: a config dataclass, the loop, checkpoints, runs and recipes."""

from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import evaluate, train, train_one_epoch
from cnnlab.train.recipes import Recipe, get_recipe, list_recipes
from cnnlab.train.run import Run, load_run

__all__ = ["Recipe", "Run", "TrainConfig", "evaluate", "get_recipe", "list_recipes", "load_run", "train",
           "train_one_epoch"]
