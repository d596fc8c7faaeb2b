"""Named presets of training settings: what each recipe *is*. What they reach, measured, is on the documentation's
Recipes page (docs/recipes.md, "What they reach") and in benchmarks/README.md."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Recipe:
    """A preset: its settings over the defaults, and what it is."""

    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe; a duplicate name is an error."""
    if recipe.name in _RECIPES:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes() -> list[Recipe]:
    return list(_RECIPES.values())


def get_recipe(name: str) -> Recipe:
    if name in _RECIPES:
        return _RECIPES[name]
    close = difflib.get_close_matches(name, list(_RECIPES), n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise CnnlabError(f"unknown recipe {name!r}.{hint} Run `cnnlab recipes` to list them.")


# The tutorial's setup, kept exactly, mistakes included: pixels in [0, 1] without normalization, plain SGD,
# and a model that already ends in Softmax before nn.CrossEntropyLoss applies log-softmax again. The double
# softmax squashes the gradients, so the loss sits near ln(10) = 2.30 for several epochs before it drops.
_TUTORIAL = {
    "dataset": "mnist",
    "normalize": False,
    "augment": "none",
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_epochs": 0.0,
    "label_smoothing": 0.0,
    "epochs": 10,
    "val_size": 0,  # the tutorial trains on all 60,000 images and reports test accuracy
    "select": "best",  # as before the defaults read the data: without validation, the best training epoch
}

register_recipe(Recipe(
    "digits",
    "lenet on the bundled 8x8 digits (resized to 28x28), AdamW lr 3e-3, batch 64, one-cycle, 15 epochs, no "
    "augmentation, the best validation epoch kept (the defaults before they were chosen from the data)",
    {"model": "lenet", "dataset": "digits", "epochs": 15, "batch_size": 64, "lr": 3e-3, "augment": "none",
     "select": "best"},
))
register_recipe(Recipe(
    "seed-mlp",
    "a widely used tutorial's MLP exactly: [0,1] pixels, SGD lr 0.01 without momentum, batch 64, 10 epochs, "
    "cross-entropy on a model that already ends in Softmax (the tutorial's mistake, kept on purpose)",
    _TUTORIAL | {"model": "mlp", "model_kwargs": {"final_softmax": True}},
))
register_recipe(Recipe(
    "seed-lenet",
    "the same tutorial's LeNet: max pooling after the first conv, average pooling after the second, the same "
    "double-softmax mistake: the loss sits on a plateau near ln 10 = 2.30 until the seed lets it escape",
    _TUTORIAL | {"model": "lenet", "model_kwargs": {"pool1": "max", "pool2": "avg", "final_softmax": True}},
))
register_recipe(Recipe(
    "seed-mlp-fixed",
    "seed-mlp with the mistake fixed: the model outputs logits, so cross-entropy sees them once",
    _TUTORIAL | {"model": "mlp"},
))
register_recipe(Recipe(
    "seed-lenet-fixed",
    "seed-lenet with the mistake fixed: logits into cross-entropy; no plateau",
    _TUTORIAL | {"model": "lenet", "model_kwargs": {"pool1": "max", "pool2": "avg"}},
))
register_recipe(Recipe(
    "seed-cnn",
    "the tutorial CNN (three conv blocks, 625-unit layer, dropout 0.3) with Adam lr 0.001, batch 100, "
    "cross-entropy, [0,1] pixels, 3 epochs",
    {"model": "mnist_cnn", "dataset": "mnist", "optimizer": "adam", "lr": 1e-3, "momentum": 0.9,
     "weight_decay": 0.0, "batch_size": 100, "schedule": "constant", "epochs": 3, "normalize": False,
     "augment": "none", "select": "best"},
))
register_recipe(Recipe(
    "mnist",
    "a good all-round MNIST run: mnist_cnn, AdamW, one-cycle, shifts of 2 pixels, 8 epochs",
    {"model": "mnist_cnn", "dataset": "mnist", "optimizer": "adamw", "lr": 2e-3, "batch_size": 128,
     "epochs": 8, "augment": "translate=2", "label_smoothing": 0.05, "select": "best"},
))
register_recipe(Recipe(
    "cifar10",
    "ResNet-9 on CIFAR-10: SGD Nesterov, one-cycle, shifts of 4 pixels, flips, cutout 8, label smoothing 0.2",
    {"model": "resnet9", "dataset": "cifar10", "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
     "nesterov": True, "weight_decay": 5e-4, "batch_size": 512, "epochs": 24,
     "augment": "translate=4,flip,cutout=8", "label_smoothing": 0.2, "select": "best"},
))

# Speed recipes (benchmarks/time_to_accuracy.py measures them against the PyTorch examples' MNIST recipe).
# They train on all 60,000 training images (val_size 0) for a fixed number of epochs and report the test split
# once at the end: no model selection looks at the test set.
_FAST = {
    "model": "fastnet", "val_size": 0, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
    "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1, "amp": "auto", "channels_last": True,
}
register_recipe(Recipe(
    "fast-mnist",
    "fastnet (0.68M mult-adds/image) for one epoch on all 60,000 MNIST images: SGD Nesterov lr 0.6, batch 256, "
    "weight decay 3e-3, one-cycle, label smoothing 0.1, bf16 autocast where native, channels-last, no augmentation",
    _FAST | {"dataset": "mnist", "epochs": 1, "batch_size": 256, "lr": 0.6, "weight_decay": 3e-3, "augment": "none"},
))
_WIDE = {  # fastnet at 5.6M mult-adds: a stride-2 5x5 conv to 14x14, a 3x3 conv, max-pool to 7x7, a 3x3 conv to
    # 5x5, and a linear layer over the whole 128x5x5 map (where things are matters more than in fast-mnist)
    "widths": [32, 64, 128], "kernels": [5, 3, 3], "strides": [2, 1, 1], "pools": [False, True, False],
    "padding": ["same", "same", "valid"], "head": "flatten",
}
register_recipe(Recipe(
    "best-mnist",
    "fastnet widened to 32-64-128 channels with a flatten head (5.6M mult-adds/image), 12 epochs on all 60,000 "
    "MNIST images with random shifts (2 px), rotations (10 degrees) and zoom (10%): SGD Nesterov lr 0.2, batch 128, "
    "one-cycle, label smoothing 0.1, bf16 autocast where native, channels-last",
    _FAST | {"dataset": "mnist", "epochs": 12, "batch_size": 128, "lr": 0.2, "model_kwargs": _WIDE,
             "augment": "translate=2,degrees=10,scale=0.1"},
))
register_recipe(Recipe(
    "fast-fashion",
    "fastnet 16-48-96 with a flatten head (2.4M mult-adds/image: a stride-2 3x3 conv to 14x14, a 3x3 conv, max-pool "
    "to 7x7, a 3x3 conv to 5x5), 4 epochs on all 60,000 Fashion-MNIST images with random flips, tested with flip "
    "TTA: SGD Nesterov lr 0.4, batch 256, one-cycle, label smoothing 0.1, bf16 autocast where native, channels-last",
    _FAST | {"dataset": "fashion-mnist", "epochs": 4, "batch_size": 256, "lr": 0.4, "augment": "flip", "tta": "flip",
             "model_kwargs": {"widths": [16, 48, 96], "kernels": [3, 3, 3], "strides": [2, 1, 1],
                              "pools": [False, True, False], "padding": ["same", "same", "valid"],
                              "head": "flatten"}},
))
