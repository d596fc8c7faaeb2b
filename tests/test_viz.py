"""Plots: each rendered to PNG, reloaded, and checked for its size and for the pixels it must contain."""

from __future__ import annotations

import threading
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import cnnlab
from cnnlab import viz
from cnnlab.errors import CnnlabError
from cnnlab.inspect import FeatureExtractor, GradCAM
from cnnlab.viz.filters import feature_stages
from cnnlab.viz.style import COLORS

DPI = 50  # small PNGs keep the tests fast; sizes scale exactly with it


def _photo(photos_dir: Path, name: str, size: int, gray: bool = False) -> torch.Tensor:
    """A real photo as a (C, size, size) float tensor in [0, 1]."""
    img = Image.open(photos_dir / name).convert("L" if gray else "RGB").resize((size, size))
    a = np.array(img, dtype=np.float32) / 255.0
    return torch.from_numpy(a)[None] if gray else torch.from_numpy(a).permute(2, 0, 1)


def _render(fig: Figure, path: Path) -> np.ndarray:
    """Save through save_figure, reload, check the size against the figure's inches, return RGB pixels."""
    w, h = fig.get_size_inches()
    out = viz.save_figure(fig, path, dpi=DPI)
    assert out == path and path.is_file()
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    assert img.shape == (round(h * DPI), round(w * DPI), 3)
    assert img.std() > 10, "the figure is blank"
    return img


def _count(img: np.ndarray, rgb: tuple[int, int, int] | str, tol: int = 12) -> int:
    """Pixels within `tol` of a colour on every channel."""
    if isinstance(rgb, str):
        rgb = tuple(int(round(255 * v)) for v in matplotlib.colors.to_rgb(rgb))
    return int((np.abs(img - np.array(rgb)) <= tol).all(axis=2).sum())


def test_show_images_draws_every_tile_at_the_requested_size(tmp_path: Path, photos_dir: Path) -> None:
    red = torch.zeros(3, 16, 16)
    red[0] = 1
    blue = torch.zeros(3, 16, 16)
    blue[2] = 1
    cam = _photo(photos_dir, "camera.png", 16, gray=True).expand(3, -1, -1)  # gray, shown in colour mode
    fig = viz.show_images(torch.stack([red, blue, cam]), labels=[0, 1, 2], class_names=["r", "b", "c"],
                          ncols=3, title="three", figsize=(6, 2.4))
    img = _render(fig, tmp_path / "show.png")
    assert img.shape[:2] == (120, 300)  # 6 x 2.4 inches at 50 dpi
    tile = 6 * DPI / 3 * 0.5  # each tile is at least half its cell wide
    assert _count(img, (255, 0, 0)) > tile**2 * 0.5
    assert _count(img, (0, 0, 255)) > tile**2 * 0.5
    # Default size: one more row of tiles makes the figure taller, not wider.
    one_row = viz.show_images(torch.rand(8, 1, 12, 12)).get_size_inches()
    two_rows = viz.show_images(torch.rand(9, 1, 12, 12), ncols=8).get_size_inches()
    assert two_rows[0] == one_row[0] and two_rows[1] > one_row[1]


def test_show_images_uint8_gray_photos(tmp_path: Path, photos_dir: Path) -> None:
    gray = (_photo(photos_dir, "camera.png", 32, gray=True) * 255).to(torch.uint8)
    img = _render(viz.show_images(torch.stack([gray, gray])), tmp_path / "gray.png")
    # A gray photo stays gray: many dark-gray pixels with equal channels, no colour cast.
    neutral = (np.abs(img[..., 0] - img[..., 1]) < 3) & (np.abs(img[..., 1] - img[..., 2]) < 3) & (img[..., 0] < 128)
    assert neutral.sum() > 200


def test_plot_curves_with_and_without_validation(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + e / 20, "val_loss": 1.2 / e, "val_acc": 0.45 + e / 20}
        for e in range(1, 6)
    ]
    img = _render(viz.plot_curves(history, figsize=(8, 3)), tmp_path / "curves.png")
    assert img.shape[:2] == (150, 400)
    assert _count(img, COLORS["train"], 30) > 50 and _count(img, COLORS["val"], 30) > 50
    no_val = [{"epoch": 1, "train_loss": 0.9, "train_acc": 0.6, "val_loss": None, "val_acc": None},
              {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8}]
    img = _render(viz.plot_curves(no_val, figsize=(8, 3)), tmp_path / "train_only.png")
    assert _count(img, COLORS["train"], 30) > 50 and _count(img, COLORS["val"], 30) == 0


def test_plot_confusion_counts_and_normalized(tmp_path: Path) -> None:
    cm = np.array([[50, 2, 0], [5, 40, 5], [0, 10, 30]])
    dark = tuple(int(255 * v) for v in matplotlib.colormaps["Blues"](1.0)[:3])
    img = _render(viz.plot_confusion(cm, ["cat", "dog", "bird"], figsize=(4, 4)), tmp_path / "cm.png")
    assert img.shape[:2] == (200, 200)
    assert _count(img, dark, 20) > 40  # the 50-count cell is the darkest blue
    norm = _render(viz.plot_confusion(cm, ["cat", "dog", "bird"], normalize=True), tmp_path / "cm_norm.png")
    assert _count(norm, dark, 20) > 40
    with pytest.raises(CnnlabError, match="square"):
        viz.plot_confusion(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(CnnlabError, match="2 class names for a 3x3"):
        viz.plot_confusion(cm, ["a", "b"])


def test_plot_filters_gray_rgb_and_per_channel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lenet = cnnlab.get_model("lenet")
    img = _render(viz.plot_filters(lenet, figsize=(6, 1.6)), tmp_path / "gray.png")
    assert img.shape[:2] == (80, 300)
    # 1-channel filters are gray tiles: many mid-tone pixels with R == G == B.
    gray = (img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2]) & (img[..., 0] > 20) & (img[..., 0] < 235)
    assert gray.sum() > 300
    rgb = viz.plot_filters(cnnlab.get_model("resnet9").prep.conv.weight, max_filters=8)
    img = _render(rgb, tmp_path / "rgb.png")
    colourful = (img.max(axis=2) - img.min(axis=2)) > 60
    assert colourful.sum() > 300
    img = _render(viz.plot_filters(lenet, layer="conv2", max_filters=3, max_channels=4), tmp_path / "deep.png")
    # Signed weights on a blue-white-red scale: both ends appear.
    assert ((img[..., 2] - img[..., 0]) > 60).sum() > 30 and ((img[..., 0] - img[..., 2]) > 60).sum() > 30
    with pytest.raises(CnnlabError, match="'fc1' is a Linear, not a Conv2d"):
        viz.plot_filters(lenet, layer="fc1")
    with pytest.raises(CnnlabError, match="mode 'rgb' needs filters with 3"):
        viz.plot_filters(lenet, mode="rgb")


def test_plot_feature_maps_groups_stages(tmp_path: Path, photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("lenet").eval()
    with FeatureExtractor(model) as fx:
        model(_photo(photos_dir, "camera.png", 28, gray=True)[None])
    stages = [["conv1", "relu1", "pool1"], ["conv2", "relu2", "pool2"]]  # relu3 is (1, 84): no map
    assert feature_stages(fx.features) == stages
    assert feature_stages(dict(fx.features)) == stages  # a plain dict: kinds guessed from the names
    fig = viz.plot_feature_maps(fx.features, channels=3, figsize=(7, 4))
    img = _render(fig, tmp_path / "maps.png")
    assert img.shape[:2] == (200, 350)
    # Conv outputs of a real photo have both signs: red and blue pixels.
    assert ((img[..., 2] - img[..., 0]) > 60).sum() > 50 and ((img[..., 0] - img[..., 2]) > 60).sum() > 50
    with pytest.raises(CnnlabError, match="no captured layer named 'conv3'"):
        viz.plot_feature_maps(fx.features, layers=["conv3"])


def test_plot_mistakes_with_heatmaps_and_when_there_are_none(tmp_path: Path, photos_dir: Path) -> None:
    images = torch.stack([_photo(photos_dir, n, 32) for n in ("chelsea.png", "coffee.png", "rocket.jpg")])
    heat = torch.zeros(3, 32, 32)
    heat[:, :16, :16] = 1.0  # hot top-left corner: dark red in the 'jet' colormap
    fig = viz.plot_mistakes(images, [0, 1, 2], [1, 2, 0], [0.87, 0.6, 0.99], ["cat", "cup", "rocket"],
                            heatmaps=heat, ncols=3, figsize=(6, 2.4))
    img = _render(fig, tmp_path / "mistakes.png")
    assert img.shape[:2] == (120, 300)
    plain = _render(viz.plot_mistakes(images, [0, 1, 2], [1, 2, 0], [0.87, 0.6, 0.99], ["cat", "cup", "rocket"],
                                      ncols=3, figsize=(6, 2.4)), tmp_path / "plain.png")
    # The overlay tints the cold 3/4 of each tile blue: far more strongly blue pixels than without it.
    blue = lambda a: ((a[..., 2] - a[..., 0]) > 80).sum()  # noqa: E731
    assert blue(img) > blue(plain) + 500
    assert viz.plot_mistakes.__doc__ and "true: cat / pred: cup (87%)" == viz.predictions.mistake_title(
        0, 1, 0.87, ["cat", "cup", "rocket"])
    none = viz.plot_mistakes(images[:0], [], [], [], ["cat"])
    img = np.asarray(Image.open(viz.save_figure(none, tmp_path / "none.png", dpi=DPI)).convert("RGB"))
    assert (img.min(axis=2) < 200).sum() > 20  # the 'no mistakes' text is drawn
    with pytest.raises(CnnlabError, match="3 images, 2 true"):
        viz.plot_mistakes(images, [0, 1], [1, 2, 0], [0.8, 0.6, 0.9], None)


def test_plot_predictions_and_binary_probs(tmp_path: Path, photos_dir: Path) -> None:
    probs = torch.tensor([0.05, 0.7, 0.1, 0.15])
    fig = viz.plot_predictions(_photo(photos_dir, "chelsea.png", 48), probs, ["a", "cat", "b", "c"], topk=3,
                               figsize=(6, 2))
    img = _render(fig, tmp_path / "pred.png")
    assert img.shape[:2] == (100, 300)
    assert _count(img, COLORS["top"], 10) > 100 and _count(img, COLORS["bar"], 10) > 50
    binary = viz.plot_predictions(_photo(photos_dir, "camera.png", 48, gray=True), torch.tensor([0.8]), ["cat", "dog"])
    _render(binary, tmp_path / "binary.png")
    assert viz.predictions.as_probs(torch.tensor([0.8]), ["cat", "dog"]) == pytest.approx([0.2, 0.8])
    with pytest.raises(CnnlabError, match="probabilities in \\[0, 1\\]"):
        viz.plot_predictions(torch.rand(3, 8, 8), torch.tensor([2.0, -1.0]), ["a", "b"])


def test_plot_explanation_and_overlay(tmp_path: Path, photos_dir: Path) -> None:
    torch.manual_seed(0)
    image = _photo(photos_dir, "astronaut.png", 32)
    model = cnnlab.get_model("cifar_net").eval()
    cam = GradCAM(model)
    heat = cam(image)
    probs = torch.softmax(cam.outputs[0], 0)
    fig = viz.plot_explanation(image, heat[0], heat[0], probs, [str(i) for i in range(10)], layer_name=cam.layer_name,
                               figsize=(9, 2.5))
    img = _render(fig, tmp_path / "explain.png")
    assert img.shape[:2] == (125, 450)

    over = viz.overlay_heatmap(image, torch.ones(8, 8), alpha=1.0)  # a small map is resized to the image
    assert over.shape == (32, 32, 3) and over.dtype == np.uint8
    jet_top = np.round(np.array(matplotlib.colormaps["jet"](1.0)[:3]) * 255)
    assert np.abs(over.astype(int) - jet_top).max() <= 1
    same = viz.overlay_heatmap(image, torch.rand(32, 32), alpha=0.0)
    assert np.abs(same.astype(int) - np.round(image.permute(1, 2, 0).numpy() * 255)).max() <= 1
    gray = viz.overlay_heatmap(_photo(photos_dir, "camera.png", 16, gray=True), np.zeros((16, 16)))
    assert gray.shape == (16, 16, 3)


def test_drawing_into_a_given_axes_returns_its_figure(tmp_path: Path, photos_dir: Path) -> None:
    fig = Figure(figsize=(10, 6), layout="constrained")
    axes = fig.subplots(2, 2)
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}, {"epoch": 2, "train_loss": 0.5, "train_acc": 0.7}]
    assert viz.show_images(torch.rand(4, 3, 8, 8), ncols=2, ax=axes[0, 0]) is fig
    assert viz.plot_curves(history, ax=axes[0, 1]) is fig
    assert viz.plot_confusion(np.eye(3, dtype=int) * 5, ["a", "b", "c"], ax=axes[1, 0]) is fig
    assert viz.plot_predictions(_photo(photos_dir, "coffee.png", 16), torch.tensor([0.3, 0.7]), ["x", "y"],
                                ax=axes[1, 1]) is fig
    img = _render(fig, tmp_path / "dashboard.png")
    assert img.shape[:2] == (300, 500)
    # Every quarter of the dashboard has something drawn in it.
    for rows in (slice(0, 150), slice(150, 300)):
        for cols in (slice(0, 250), slice(250, 500)):
            assert img[rows, cols].std() > 10


def test_save_figure_is_atomic_and_plots_work_in_threads(tmp_path: Path) -> None:
    target = tmp_path / "out" / "fig.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    results: dict[int, Path] = {}

    def work(i: int) -> None:
        fig = viz.plot_confusion(np.array([[3, 1], [0, 4]]) * (i + 1), ["a", "b"])
        results[i] = viz.save_figure(fig, tmp_path / "out" / f"thread{i}.png", dpi=DPI)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    viz.save_figure(viz.plot_confusion(np.eye(2, dtype=int), ["a", "b"]), target, dpi=DPI)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the old file was replaced
    names = sorted(p.name for p in target.parent.iterdir())
    assert names == ["fig.png", "thread0.png", "thread1.png", "thread2.png"]  # no temporary files left
    for path in results.values():
        assert np.asarray(Image.open(path).convert("L")).std() > 10
    svg = viz.save_figure(viz.plot_confusion(np.eye(2, dtype=int), ["a", "b"]), tmp_path / "fig.svg")
    assert svg.read_text().lstrip().startswith("<?xml")


def test_to_hwc_layouts() -> None:
    chw = torch.rand(3, 5, 7)
    assert viz.to_hwc(chw).shape == (5, 7, 3)
    hwc = (np.random.rand(5, 7, 3) * 255).astype(np.uint8)
    assert np.allclose(viz.to_hwc(hwc), hwc / 255.0)
    assert viz.to_hwc(torch.rand(1, 5, 7)).shape == (5, 7)
    with pytest.raises(CnnlabError, match="1 or 3 channels"):
        viz.to_hwc(torch.rand(2, 5, 7))
