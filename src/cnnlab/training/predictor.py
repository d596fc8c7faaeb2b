"""Prediction on any image source, the same for a run and for an exported model: images checked against the
training images (inverted where their background is the opposite), classified, said what was noticed; many files
decoded by threads a batch ahead."""

from __future__ import annotations

import dataclasses
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from cnnlab.data import get_dataset_info
from cnnlab.data.domain import Domain, InputCheck, InputWarning, confidence_warning
from cnnlab.data.images import ImageLike
from cnnlab.data.loader import decode_threads
from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError
from cnnlab.models.outputs import top_classes
from cnnlab.training.tta import predictor_probabilities

FILES_BATCH = 32  # files classified together by `classify_files`


@dataclass
class Prediction:
    """One image's prediction: the top-k (class, probability) pairs, all probabilities, and what was noticed."""

    top: list[tuple[str, float]]
    probabilities: torch.Tensor  # (K,)
    inverted: bool = False  # its background was the opposite of the training images': it was inverted first
    warnings: list[str] = field(default_factory=list)  # how it is unlike the training images; low confidence

    def notes(self) -> list[str]:
        """What to tell the user about this input, the inversion first."""
        return InputCheck(self.inverted, self.warnings).notes()


class Predictor:
    """Prediction on any image source, for anything with `.pipeline`, `.logits(x)`, `.classes`, `.outputs_are_probs`.

    `Run` (a checkpoint) and the exported-model predictors (ONNX, TorchScript) share it, so every backend
    converts and ranks images in exactly the same way. An image whose background is the opposite of the training
    images' (a digit drawn dark on white, for a model trained on MNIST) is inverted first unless `invert=False`;
    that, and inputs unlike the training images, are said: in `classify`'s results, and as `InputWarning`s from
    `predict` and `predict_proba`.
    """

    pipeline: Pipeline
    classes: tuple[str, ...]
    outputs_are_probs: bool
    dataset: str | None = None  # what it learned from: whether a mirrored image keeps its label (--tta flip)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def plan(self, images: int) -> None:
        """Say how many images are coming, where the backend depends on it (a Run's does)."""

    def classify_files(self, paths: Sequence[str | Path], topk: int = 3, tta: str = "none", invert: bool = True,
                       batch: int = FILES_BATCH) -> Iterator[tuple[str | Path, Prediction | CnnlabError]]:
        """Each file's Prediction, or the error that kept it from one (a file that does not decode), in order:
        decoded by threads a batch ahead of the one being classified, on the backend chosen for this many."""
        self.plan(len(paths) * (2 if tta == "flip" else 1))
        chunks = [list(paths[i: i + batch]) for i in range(0, len(paths), batch)]
        with ThreadPoolExecutor(max_workers=decode_threads(), thread_name_prefix="cnnlab-decode") as pool:
            def load(chunk: list) -> list:
                return [pool.submit(self._load_checked, p, invert) for p in chunk]

            ahead = load(chunks[0]) if chunks else []
            for i, chunk in enumerate(chunks):
                loaded, ahead = [f.result() for f in ahead], (load(chunks[i + 1]) if i + 1 < len(chunks) else [])
                results: list = list(loaded)  # errors stay; decoded images become predictions
                good = [j for j, got in enumerate(loaded) if not isinstance(got, CnnlabError)]
                if good:
                    probs = predictor_probabilities(self, torch.cat([loaded[j][0] for j in good]), tta)
                    for row, j in zip(probs, good):
                        results[j] = self._prediction(row, loaded[j][1], topk)
                yield from zip(chunk, results)

    def _load_checked(self, path: str | Path, invert: bool) -> tuple[torch.Tensor, InputCheck] | CnnlabError:
        try:
            x, checks = self.prepare_checked(path, invert)
            return x, checks[0]
        except CnnlabError as exc:
            return exc

    def _prediction(self, row: torch.Tensor, check: InputCheck, topk: int) -> Prediction:
        top = [(c.name, c.probability) for c in top_classes(row, self.classes, topk)]
        low = confidence_warning(float(row.max()))
        return Prediction(top, row, check.inverted, check.warnings + ([low] if low else []))

    def classify(self, images: ImageLike | Sequence[ImageLike], topk: int = 3, tta: str = "none",
                 invert: bool = True) -> list[Prediction]:
        """One `Prediction` per image (a list even for one image), with what was noticed about each."""
        x, checks = self.prepare_checked(images, invert)
        probs = predictor_probabilities(self, x, tta)
        return [self._prediction(row, check, topk) for row, check in zip(probs, checks)]

    def predict_proba(self, images: ImageLike | Sequence[ImageLike], tta: str = "none",
                      invert: bool = True) -> torch.Tensor:
        """Class probabilities (N, K) for one image or a list (paths, PIL images, arrays, tensors).

        `tta="flip"` averages each image's outputs with its mirror image's (refused where that changes labels).
        """
        results = self.classify(images, 1, tta, invert)
        _warn(results)
        return torch.stack([r.probabilities for r in results])

    def prepare(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Images as the model sees them: a normalized (N, C, H, W) batch (never inverted)."""
        return torch.cat([self.pipeline.load(item) for item in _items(images)])

    def prepare_checked(self, images: ImageLike | Sequence[ImageLike],
                        invert: bool = True) -> tuple[torch.Tensor, list[InputCheck]]:
        """`prepare`, each image compared with the training images (and inverted where its polarity is opposite)."""
        pipe = self.pipeline
        if pipe.domain is None:  # a run or export from before domains were recorded: the dataset's known polarity
            pipe = dataclasses.replace(pipe, domain=known_domain(self.dataset))
        loaded = [pipe.load_checked(item, invert) for item in _items(images)]
        return torch.cat([x for x, _ in loaded]), [check for _, check in loaded]

    def predict(self, images: ImageLike | Sequence[ImageLike], topk: int = 3, tta: str = "none",
                invert: bool = True):
        """Top-k (class name, probability) pairs: a list for one image, a list of lists for several."""
        results = self.classify(images, topk, tta, invert)
        _warn(results)
        out = [r.top for r in results]
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.dim() == 4)
        return out[0] if single else out


def _items(images: ImageLike | Sequence[ImageLike]) -> list:
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        items: list = list(images)
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise CnnlabError("no images to predict")
    return items


def _warn(results: list[Prediction]) -> None:
    for i, r in enumerate(results):
        for note in r.notes():
            warnings.warn(f"image {i}: {note}", InputWarning, stacklevel=3)


def known_domain(dataset: str | None) -> Domain | None:
    """The polarity a built-in dataset is known to have (for runs that recorded no domain)."""
    try:
        dark = get_dataset_info(dataset).dark_background if dataset else None
    except CnnlabError:  # a folder, or a dataset this version does not know
        return None
    return None if dark is None else Domain("dark" if dark else "light")
