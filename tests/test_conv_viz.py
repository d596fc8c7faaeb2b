"""Convolution figures: rendered headless, then checked pixel by pixel, panel by panel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.conv import conv2d, learn_kernel
from cnnlab.conv.images import load_image
from cnnlab.conv.kernels import get_kernel
from cnnlab.errors import CnnlabError
from cnnlab.viz.conv import kernel_heatmap, learned_kernel_figure, pipeline_figure
from cnnlab.viz.style import new_figure


def render(fig, path) -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """Save the figure as PNG and return its pixels and the pixel boxes (left, top, right, bottom) of its panels."""
    fig.savefig(path, dpi=fig.dpi)  # one draw: the boxes below are those of the layout in the file
    height = fig.bbox.height
    boxes = {}
    for ax in fig.axes:
        if ax.get_label() and not ax.get_label().startswith("<"):
            # the image itself where there is one (an axes box is wider than an image of another aspect ratio)
            b = ax.images[0].get_window_extent() if ax.images else ax.get_window_extent()
            boxes[ax.get_label()] = (int(b.x0) + 3, int(height - b.y1) + 3, int(b.x1) - 3, int(height - b.y0) - 3)
    return np.asarray(Image.open(path).convert("RGB")), boxes


def crop(png: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return png[top:bottom, left:right, :3].astype(np.float64) / 255


def white_fraction(a: np.ndarray) -> float:
    return float((a.min(axis=2) > 0.94).mean())


def red_and_blue(a: np.ndarray) -> tuple[float, float]:
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return float(((r - b > 0.25) & (r - g > 0.15)).mean()), float(((b - r > 0.25) & (b - g > 0.05)).mean())


def resized(a: np.ndarray, size: int = 64) -> np.ndarray:
    im = Image.fromarray((a * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float64) / 255


def test_pipeline_figure_panels(photos_dir, tmp_path) -> None:
    image = load_image(photos_dir / "astronaut.png", size=128)
    kernels = {"sobel_x": get_kernel("sobel_x"), "gaussian": get_kernel("gaussian")}
    fig = pipeline_figure(image, kernels, image_title="astronaut.png")
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    png, boxes = render(fig, tmp_path / "pipe.png")
    assert png.shape == (height, width, 3)
    expected = {"input", "legend"} | {f"{s}:{k}" for s in ("kernel", "conv", "act", "pool") for k in kernels}
    assert expected <= set(boxes)
    panels = {name: crop(png, box) for name, box in boxes.items()}
    # every image panel shows something: not blank, not one flat colour
    for name in expected - {"legend"}:
        assert panels[name].std() > 0.05, name
    # the input is the photo in colour
    inp = panels["input"]
    assert np.abs(inp[..., 0] - inp[..., 2]).mean() > 0.05
    # sobel_x output is signed: mostly white (no edge) with red and blue edges; it is not the photo
    conv = panels["conv:sobel_x"]
    red, blue = red_and_blue(conv)
    assert white_fraction(conv) > 0.3 and red > 0.005 and blue > 0.005
    assert np.abs(resized(conv) - resized(inp)).mean() > 0.1
    # after ReLU no negative is left: drawn on the non-negative colormap, which has no white and no red
    act = panels["act:sobel_x"]
    assert white_fraction(act) < 0.05 and red_and_blue(act)[0] < 0.001
    # the sobel_x kernel heatmap has a blue (negative) and a red (positive) column, the gaussian only red
    assert min(red_and_blue(panels["kernel:sobel_x"])) > 0.1
    assert red_and_blue(panels["kernel:gaussian"])[1] == 0.0
    # the blurred photo is non-negative: the feature colormap, no white, and it is not the sobel map
    assert white_fraction(panels["conv:gaussian"]) < 0.05
    assert np.abs(resized(panels["pool:gaussian"]) - resized(panels["pool:sobel_x"])).mean() > 0.05


def test_per_channel_pipeline_keeps_colour(photos_dir, tmp_path) -> None:
    image = load_image(photos_dir / "chelsea.png", size=96)
    fig = pipeline_figure(image, {"box_blur": get_kernel("box_blur")}, channels="per_channel")
    png, boxes = render(fig, tmp_path / "c.png")
    inp, blurred = crop(png, boxes["input"]), crop(png, boxes["conv:box_blur"])
    # a 3x3 blur of the cat, channel by channel, still looks like the cat in colour
    assert np.abs(blurred[..., 0] - blurred[..., 2]).mean() > 0.03
    assert np.abs(resized(blurred) - resized(inp)).mean() < 0.08


def test_kernel_heatmap_writes_every_number() -> None:
    ax = kernel_heatmap(get_kernel("sobel_x"), title="sobel_x")
    assert [t.get_text() for t in ax.texts] == ["-1", "0", "1", "-2", "0", "2", "-1", "0", "1"]
    gauss = kernel_heatmap(get_kernel("gaussian", n=5, sigma=1.0))
    assert len(gauss.texts) == 25 and gauss.texts[12].get_text() == "0.162"
    with pytest.raises(CnnlabError, match="2-D"):
        kernel_heatmap(torch.ones(2, 3, 3))


def test_learned_kernel_figure(photos_dir, tmp_path) -> None:
    x = load_image(photos_dir / "camera.png", gray=True, size=40)[0]
    true = get_kernel("sobel_y")
    y = conv2d(x[None, None], true[None, None])[0, 0]
    result = learn_kernel(x, y, 3)
    fig = learned_kernel_figure(x, y, true, result.kernel, result.losses, "sobel_y")
    png, boxes = render(fig, tmp_path / "l.png")
    panels = {k: crop(png, b) for k, b in boxes.items()}
    for name in ("inputs", "targets", "prediction", "loss", "true", "learned"):
        assert panels[name].std() > 0.03, name
    # the learned kernel looks like the true one, and its output like the target
    assert np.abs(resized(panels["learned"]) - resized(panels["true"])).mean() < 0.05
    # ...while a different kernel (sobel_x against the true sobel_y) would look clearly different
    other_fig = new_figure((2.3, 2.3))
    kernel_heatmap(get_kernel("sobel_x"), other_fig.add_subplot(label="other"))
    other_png, other_boxes = render(other_fig, tmp_path / "other.png")
    other = crop(other_png, other_boxes["other"])
    assert np.abs(resized(other) - resized(panels["true"])).mean() > 0.1
    assert np.abs(resized(panels["prediction"]) - resized(panels["targets"])).mean() < 0.02
    assert np.abs(resized(panels["inputs"]) - resized(panels["targets"])).mean() > 0.1
