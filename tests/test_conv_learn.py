"""learn_kernel: a conv layer trained by gradient descent recovers the kernel that made the targets."""

from __future__ import annotations

import pytest
import torch

from cnnlab.conv import conv2d, learn_kernel
from cnnlab.conv.images import load_image
from cnnlab.conv.kernels import get_kernel
from cnnlab.errors import CnnlabError


def _photo(photos_dir, name: str, size: int = 48) -> torch.Tensor:
    return load_image(photos_dir / name, gray=True, size=size)[0]


@pytest.mark.parametrize(
    "kernel_name, params, photo",
    [("edge", {}, "camera.png"), ("sobel_x", {}, "astronaut.png"), ("gaussian", {"n": 5, "sigma": 1.0}, "coffee.png")],
)
def test_recovers_the_kernel_from_a_noiseless_photo(photos_dir, kernel_name, params, photo) -> None:
    x = _photo(photos_dir, photo)
    true = get_kernel(kernel_name, **params)
    targets = conv2d(x[None, None], true[None, None])[0, 0]
    result = learn_kernel(x, targets, tuple(true.shape))
    assert result.kernel.shape == true.shape
    assert (result.kernel - true).abs().max() < 1e-3
    # it starts from zeros, so the first loss is the mean square of the targets, and it ends near zero
    assert result.losses[0] == pytest.approx(targets.pow(2).mean().item(), rel=1e-5)
    assert result.losses[-1] < 1e-6 * result.losses[0]


def test_several_images_at_once_and_a_batch_layout(photos_dir) -> None:
    xs = torch.stack([_photo(photos_dir, n, 32) for n in ("chelsea.png", "rocket.jpg")])  # (2, 32, H)
    xs = xs[:, :, :32]
    true = get_kernel("prewitt_y")
    ys = conv2d(xs[:, None], true[None, None])  # (2, 1, 30, 30)
    result = learn_kernel(xs[:, None], ys, 3)
    assert (result.kernel - true).abs().max() < 1e-3


def test_noise_limits_the_fit_to_the_noise_level(photos_dir) -> None:
    x = _photo(photos_dir, "camera.png", 64)
    true = get_kernel("sobel_x")
    clean = conv2d(x[None, None], true[None, None])[0, 0]
    sigma = 0.05
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    result = learn_kernel(x, noisy, 3)
    # the best kernel cannot explain the noise: the loss stalls near sigma^2, yet the kernel stays close
    assert result.losses[-1] == pytest.approx(sigma**2, rel=0.2)
    assert 1e-3 < (result.kernel - true).abs().max() < 0.2


def test_a_given_learning_rate_is_used_and_too_large_a_step_diverges(photos_dir) -> None:
    x = _photo(photos_dir, "camera.png", 32)
    true = get_kernel("edge")
    y = conv2d(x[None, None], true[None, None])[0, 0]
    safe = learn_kernel(x, y, (1, 2), steps=50)
    big = learn_kernel(x, y, (1, 2), steps=5, lr=safe.lr * 20, momentum=0.0)
    assert big.lr == pytest.approx(safe.lr * 20)
    # each step overshoots the bottom of the valley by more than it started: the loss grows
    assert all(b > a for a, b in zip(big.losses[1:], big.losses[2:]))
    assert safe.losses[-1] < 0.1 * safe.losses[0]
    with pytest.raises(CnnlabError, match="learning rate .* is too large"):
        learn_kernel(x, y, (1, 2), steps=2000, lr=safe.lr * 20, momentum=0.0)


@pytest.mark.parametrize(
    "args, words",
    [
        ((torch.ones(8, 8), torch.ones(8, 8), 3), "turns a 8x8 input into 6x6"),
        ((torch.ones(8, 8), torch.ones(2, 6, 6), 3), "1 input image(s) but 2"),
        ((torch.ones(2, 8, 8), torch.ones(2, 6, 6), 9), "does not fit"),
        ((torch.zeros(8, 8), torch.zeros(6, 6), 3), "all zero"),
        ((torch.ones(1, 3, 8, 8), torch.ones(1, 1, 6, 6), 3), "gray images"),
    ],
)
def test_bad_input(args, words: str) -> None:
    with pytest.raises(CnnlabError) as info:
        learn_kernel(*args)
    assert words in str(info.value)
