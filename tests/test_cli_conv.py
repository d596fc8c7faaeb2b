"""The convolution-lab commands on the shared photos: their text, their exit codes and the pixels of their figures."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli.main import main
from cnnlab.conv import conv2d, learn_kernel
from cnnlab.conv.images import load_image
from cnnlab.conv.kernels import get_kernel, list_kernels
from cnnlab.viz.conv import learned_kernel_figure, pipeline_figure


def render(fig, path):
    """Save the figure and return the pixel boxes (left, top, right, bottom) of its labelled panels."""
    fig.savefig(path, dpi=fig.dpi)
    height = fig.bbox.height
    boxes = {}
    for ax in fig.axes:
        if ax.get_label() and not ax.get_label().startswith("<"):
            b = ax.images[0].get_window_extent() if ax.images else ax.get_window_extent()
            boxes[ax.get_label()] = (int(b.x0) + 3, int(height - b.y1) + 3, int(b.x1) - 3, int(height - b.y0) - 3)
    return boxes


def load_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255


def crop(png: np.ndarray, box) -> np.ndarray:
    left, top, right, bottom = box
    return png[top:bottom, left:right]


def resized(a: np.ndarray, size: int = 64) -> np.ndarray:
    """Shrunk, so that small differences such as '1' against '1.000' written in a cell do not count."""
    im = Image.fromarray((a * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float64) / 255


def white_fraction(a: np.ndarray) -> float:
    return float((a.min(axis=2) > 0.94).mean())


def test_kernels_command_on_a_photo(photos_dir, tmp_path, capsys) -> None:
    out = tmp_path / "figs" / "edges.png"  # the folder is created
    rc = main(["kernels", str(photos_dir / "astronaut.png"), "--kernel", "sobel_x", "--kernel", "laplacian",
               "--size", "128", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "astronaut.png: 128x128" in text and "sobel_x (3x3)" in text and "laplacian (3x3)" in text
    assert "conv 126x126" in text and "2x2 max pool 63x63" in text and f"wrote {out}" in text
    assert not list(out.parent.glob("*.tmp"))  # written atomically: no temp file left behind
    png = load_png(out)
    # the same figure built here gives the layout: where each panel of the command's figure is
    image = load_image(photos_dir / "astronaut.png", size=128)
    fig = pipeline_figure(image, {"sobel_x": get_kernel("sobel_x"), "laplacian": get_kernel("laplacian")},
                          image_title="astronaut.png")
    boxes = render(fig, tmp_path / "reference.png")
    assert png.shape == load_png(tmp_path / "reference.png").shape == (740, 1020, 3)  # 3 rows of 4 panels
    panels = {name: crop(png, box) for name, box in boxes.items()}
    for name in ("input", "kernel:sobel_x", "conv:sobel_x", "act:sobel_x", "pool:sobel_x", "conv:laplacian"):
        assert panels[name].std() > 0.05, name
    inp, conv, act = panels["input"], panels["conv:sobel_x"], panels["act:sobel_x"]
    assert np.abs(inp[..., 0] - inp[..., 2]).mean() > 0.05  # the photo, in colour
    assert white_fraction(conv) > 0.3  # signed edge map: white where there is no edge
    assert white_fraction(act) < 0.05  # after ReLU: the non-negative colormap, never white
    # two kernels, two different maps, and the filtered map is not the photo
    assert np.abs(resized(panels["conv:sobel_x"]) - resized(panels["conv:laplacian"])).mean() > 0.02
    assert np.abs(resized(conv) - resized(inp)).mean() > 0.1


def test_kernels_command_gray_and_bundled_photo(tmp_path, capsys) -> None:
    out = tmp_path / "gray.png"
    assert main(["kernels", "--gray", "--kernel", "gaussian:n=5,sigma=2", "--size", "96", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "china.jpg (scikit-learn): 64x96" in text and "gaussian(n=5, sigma=2) (5x5)" in text
    from cnnlab.conv.images import sample_image

    fig = pipeline_figure(sample_image(gray=True, size=96), {"g": get_kernel("gaussian", n=5, sigma=2.0)})
    boxes = render(fig, tmp_path / "ref.png")
    png = load_png(out)
    inp = crop(png, boxes["input"])
    assert inp.std() > 0.05 and np.abs(inp[..., 0] - inp[..., 2]).max() < 0.02  # gray: R = G = B
    blurred = crop(png, boxes["conv:g"])
    assert blurred.std() > 0.05 and np.abs(blurred[..., 0] - blurred[..., 2]).mean() > 0.1  # feature colormap


def test_kernels_list(capsys) -> None:
    assert main(["kernels", "--list"]) == 0
    text = capsys.readouterr().out
    for name in list_kernels():
        assert re.search(rf"^{name}\b", text, re.MULTILINE), name
    assert "gaussian (n=5, sigma=1.0)" in text and "-2    0    2" in text


@pytest.mark.parametrize(
    "argv, words",
    [
        (["kernels", "/no/such/photo.png"], "no image file at /no/such/photo.png"),
        (["kernels", "--kernel", "sobel_z"], "known kernels: identity, box_blur"),
        (["kernels", "--kernel", "gaussian:width=3"], "its parameters: n=5, sigma=1.0"),
        (["conv-size", "3", "-k", "5"], "larger than the padded input"),
        (["conv-size", "28"], "give the kernel size"),
        (["conv-size", "28", "-k", "3", "--chain", "k=3"], "not both"),
        (["conv-size", "28", "--chain", "k3"], "write it like"),
        (["learn-kernel", "--kernel", "nope"], "known kernels"),
        (["learn-kernel", "--kernel", "edge", "--noise", "-1"], "--noise"),
        (["learn-kernel", "--kernel", "gaussian:n=9", "--size", "6"], "does not fit"),
    ],
)
def test_bad_input_is_one_clear_line(argv, words: str, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were it would land here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_conv_size_alexnet(capsys) -> None:
    assert main(["conv-size", "227", "-k", "11", "-s", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "    = floor((227 + 2*0 - 1*(11-1) - 1) / 4) + 1" and lines[-1] == "    = 55"


def test_conv_size_chain(capsys) -> None:
    argv = ["conv-size", "227", "--chain", "conv1:k=11,s=4", "pool1:k=3,s=2", "conv2:k=5,p=2", "pool2:k=3,s=2"]
    assert main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("conv", "pool"))]
    assert [(r[0], int(r[1]), int(r[6])) for r in rows] == [
        ("conv1", 227, 55), ("pool1", 55, 27), ("conv2", 27, 27), ("pool2", 27, 13)
    ]


def test_conv_size_through_the_installed_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "cnnlab", "conv-size", "28", "-k", "5", "-p", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("= 28")


@pytest.mark.slow
def test_the_command_exits_with_mains_code_all_output_and_exit_handlers_run(capsys) -> None:
    """`entry()` leaves with os._exit: the exit code, buffered output and atexit handlers must survive that."""
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    script = ("import atexit, sys; atexit.register(lambda: print('exit handler ran')); "
              "sys.argv = ['cnnlab'] + sys.argv[1:]; from cnnlab.cli.main import entry; entry()")
    done = subprocess.run([sys.executable, "-c", script, "models"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == listing + "exit handler ran\n"  # a pipe: block-buffered, flushed before leaving
    failed = subprocess.run([sys.executable, "-m", "cnnlab", "conv-size", "3", "-k", "5"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.startswith("error:"), failed.stderr


def _max_error(text: str) -> float:
    return float(re.search(r"max \|learned - true\| = (\S+)", text).group(1))


def test_learn_kernel_command(photos_dir, tmp_path, capsys) -> None:
    out = tmp_path / "learned.png"
    argv = ["learn-kernel", "--kernel", "sobel_x", "--image", str(photos_dir / "camera.png"), "--size", "40",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "learning sobel_x (3x3) from camera.png, 40x40 gray" in text and "step     0  loss" in text
    assert _max_error(text) < 1e-3
    # the learned kernel printed beside the true one: the middle row reads -2 0 2 on both sides
    middle = [line for line in text.splitlines() if line.strip().startswith("-2.0000")][0].split()
    assert [round(float(v)) for v in middle] == [-2, 0, 2, -2, 0, 2]
    # the figure: rebuild the same one here for its layout, then read the command's pixels
    x = load_image(photos_dir / "camera.png", gray=True, size=40)[0]
    true = get_kernel("sobel_x")
    y = conv2d(x[None, None], true[None, None])[0, 0]
    result = learn_kernel(x, y, 3)
    boxes = render(learned_kernel_figure(x, y, true, result.kernel, result.losses, "sobel_x"), tmp_path / "ref.png")
    png = load_png(out)
    panels = {k: crop(png, b) for k, b in boxes.items()}
    for name in ("inputs", "targets", "prediction", "loss", "true", "learned"):
        assert panels[name].std() > 0.03, name
    assert np.abs(resized(panels["learned"]) - resized(panels["true"])).mean() < 0.05  # the kernels look the same
    assert np.abs(panels["prediction"] - panels["targets"]).mean() < 0.02
    assert np.abs(panels["inputs"].mean() - panels["targets"].mean()) > 0.05  # the target is not the photo


def test_learn_kernel_with_noise_is_less_exact(photos_dir, tmp_path, capsys) -> None:
    base = ["learn-kernel", "--kernel", "edge", "--image", str(photos_dir / "rocket.jpg"), "--size", "40"]
    assert main(base + ["--out", str(tmp_path / "a.png")]) == 0
    clean = _max_error(capsys.readouterr().out)
    assert main(base + ["--noise", "0.05", "--out", str(tmp_path / "b.png")]) == 0
    noisy = _max_error(capsys.readouterr().out)
    assert clean < 1e-3 < noisy < 0.2
    assert load_png(tmp_path / "b.png").std() > 0.1


def test_help_texts_read_well(capsys) -> None:
    for cmd in ("kernels", "conv-size", "learn-kernel"):
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0
        assert "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "kernels" in top and "conv-size" in top and "learn-kernel" in top
    torch.testing.assert_close(get_kernel("edge"), torch.tensor([[1.0, -1.0]]))
