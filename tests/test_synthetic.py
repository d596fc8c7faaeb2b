"""Generated data: colour_shapes, whose colours share one brightness (gray keeps the shape, loses the colour), and
image folders written from tensors and read back by `folder:`."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.data import get_dataset
from cnnlab.data.folder import write_image_folder
from cnnlab.data.pipeline import LUMA, convert_channels
from cnnlab.data.synthetic import HUES, colour_classes, colour_shapes, isoluminant


def test_every_hue_has_the_luma_it_is_given() -> None:
    luma = torch.linspace(0.4, 0.55, 7)
    for hue in HUES:
        rgb = isoluminant(hue, luma)
        assert ((rgb @ torch.tensor(LUMA)) - luma).abs().max() < 1e-6
        assert rgb.min() >= 0 and rgb.max() <= 1  # no channel clipped, so the luma stays the one given
        assert rgb.argmax(1).eq(list(HUES).index(hue)).all()  # and it is the colour it says


def test_the_same_seed_gives_the_same_images_and_every_class_its_share() -> None:
    a, b, c = colour_shapes(20, seed=3), colour_shapes(20, seed=3), colour_shapes(20, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (120, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.classes == colour_classes() and torch.bincount(a.targets).tolist() == [20] * 6


def test_in_gray_the_colours_of_one_shape_look_alike() -> None:
    """Gray keeps what tells a disc from a square, and loses what tells red from green: the classes' gray images
    differ by colour no more than by chance (their mean brightness matches within a few levels)."""
    data = colour_shapes(200, seed=0)
    gray = convert_channels(data.images, 1).float()
    colour_means = []
    for t, name in enumerate(data.classes):
        shape = gray[data.targets == t]
        colour_means.append(shape[shape > 80].mean().item())  # the shape's pixels: the background is darker
    assert max(colour_means) - min(colour_means) < 3  # of 255: the colours carry no brightness
    rgb = data.images.float()
    reds = [rgb[data.targets == t][:, 0][rgb[data.targets == t][:, 0] > 80].mean().item() for t in range(6)]
    assert min(reds[:2]) > max(reds[2:]) + 60  # in colour, red shapes are far redder than the others


def test_a_written_folder_reads_back_as_the_same_images(tmp_path: Path) -> None:
    train, test = colour_shapes(4, seed=1), colour_shapes(2, seed=2, split="test")
    write_image_folder(train.images, train.targets, train.classes, tmp_path / "train")
    write_image_folder(test.images, test.targets, test.classes, tmp_path / "test")
    back = get_dataset(f"folder:{tmp_path}", "train", val_size=0, image_size=(32, 32), channels=3)
    assert back.classes == tuple(sorted(train.classes)) and len(back) == 24

    def pixels(images: torch.Tensor, targets: torch.Tensor, classes: tuple[str, ...]) -> set:
        return {(classes[int(t)], img.numpy().tobytes()) for img, t in zip(images, targets)}

    assert pixels(back.images, back.targets, back.classes) == pixels(train.images, train.targets, train.classes)
