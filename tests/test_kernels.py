"""Named kernels, applying them to real photos, activations and pooling: each against a hand value or torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.conv import kernels
from cnnlab.conv.images import load_image, sample_image, to_gray
from cnnlab.conv.kernels import (
    activate,
    apply_kernel,
    conv_activate_pool,
    get_kernel,
    kernel_info,
    list_kernels,
    parse_kernel,
    pool,
)
from cnnlab.errors import CnnlabError

REQUIRED = {
    "identity", "box_blur", "gaussian", "sharpen", "sobel_x", "sobel_y", "prewitt_x", "prewitt_y",
    "laplacian", "emboss", "outline", "edge",
}


def test_every_required_kernel_is_listed_and_described() -> None:
    assert REQUIRED <= set(list_kernels())
    for name in list_kernels():
        k = get_kernel(name)
        assert k.dim() == 2 and k.dtype == torch.float32 and torch.isfinite(k).all()
        assert kernel_info(name).description


def test_kernel_values_by_hand() -> None:
    assert get_kernel("edge").tolist() == [[1.0, -1.0]]
    assert get_kernel("sobel_x").tolist() == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    assert torch.equal(get_kernel("sobel_y"), get_kernel("sobel_x").T)
    assert torch.equal(get_kernel("prewitt_y"), get_kernel("prewitt_x").T)
    assert get_kernel("laplacian").tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert get_kernel("laplacian", neighbours=8).tolist() == [[1, 1, 1], [1, -8, 1], [1, 1, 1]]
    assert torch.equal(get_kernel("outline"), -get_kernel("laplacian", neighbours=8))
    # sharpen = identity - laplacian: the image plus its detail
    assert torch.equal(get_kernel("sharpen"), get_kernel("identity") - get_kernel("laplacian"))
    assert torch.allclose(get_kernel("box_blur", n=5), torch.full((5, 5), 0.04))


def test_gaussian_is_normalised_symmetric_and_peaked() -> None:
    g = get_kernel("gaussian", n=5, sigma=1.0)
    assert g.shape == (5, 5) and g.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(g, g.T) and torch.equal(g, g.flip(0)) and g.argmax().item() == 12
    # neighbouring weights shrink by exp(-1/2) per step from the centre along an axis (sigma = 1)
    assert (g[2, 3] / g[2, 2]).item() == pytest.approx(np.exp(-0.5), rel=1e-5)
    wide = get_kernel("gaussian", n=5, sigma=3.0)
    assert wide[2, 2] < g[2, 2]  # a larger sigma spreads the weight out


def test_derivative_kernels_sum_to_zero_so_flat_areas_give_zero() -> None:
    flat = torch.full((10, 10), 0.7)
    for name in ["sobel_x", "sobel_y", "prewitt_x", "prewitt_y", "laplacian", "outline", "edge"]:
        assert apply_kernel(flat, name).abs().max() < 1e-6, name


def test_unknown_kernel_and_parameter_errors_name_the_options() -> None:
    with pytest.raises(CnnlabError) as info:
        get_kernel("sobel_z")
    assert "sobel_x" in str(info.value) and "gaussian" in str(info.value)
    with pytest.raises(CnnlabError, match="its parameters: n=5, sigma=1.0"):
        get_kernel("gaussian", size=3)
    with pytest.raises(CnnlabError, match="4 or 8"):
        get_kernel("laplacian", neighbours=6)
    with pytest.raises(CnnlabError, match="positive"):
        get_kernel("gaussian", sigma=0)
    with pytest.raises(CnnlabError, match="an integer from 1 to 99"):
        get_kernel("box_blur", n=2.5)
    with pytest.raises(CnnlabError, match="an integer from 1 to 99, got 100000"):  # refused before it is built
        get_kernel("gaussian", n=100_000)


def test_parse_kernel_spec() -> None:
    label, k = parse_kernel("gaussian:n=7,sigma=2")
    assert label == "gaussian(n=7, sigma=2)" and torch.equal(k, get_kernel("gaussian", n=7, sigma=2.0))
    assert parse_kernel("sobel_x")[0] == "sobel_x"
    with pytest.raises(CnnlabError, match="not a number"):
        parse_kernel("gaussian:n=big")


def test_apply_kernel_on_a_real_photo_against_torch(photos_dir) -> None:
    img = load_image(photos_dir / "astronaut.png", size=64)  # (3, 64, 64) RGB in [0, 1]
    assert img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
    k = get_kernel("sobel_x")
    per = apply_kernel(img, k)
    torch.testing.assert_close(per, F.conv2d(img[:, None], k[None, None])[:, 0])
    summed = apply_kernel(img, k, channels="summed")
    # one output channel of nn.Conv2d(3, 1, 3) whose three input-channel kernels are all sobel_x
    torch.testing.assert_close(summed, F.conv2d(img[None], k.expand(3, 3, 3)[None])[0, 0])
    torch.testing.assert_close(summed, per.sum(dim=0), rtol=1e-5, atol=1e-5)
    strided = apply_kernel(img, k, stride=2, padding=1, channels="summed")
    assert strided.shape == (32, 32)
    # a different kernel per channel, as a real conv layer has
    ks = torch.stack([get_kernel("sobel_x"), get_kernel("sobel_y"), get_kernel("laplacian")])
    torch.testing.assert_close(apply_kernel(img, ks, channels="summed"), F.conv2d(img[None], ks[None])[0, 0])


def test_apply_kernel_on_gray_and_on_arrays(photos_dir) -> None:
    arr = np.asarray(Image.open(photos_dir / "camera.png").convert("L"))[:40, :50]  # uint8 (H, W)
    y = apply_kernel(arr, "identity")
    torch.testing.assert_close(y, torch.tensor(arr[1:-1, 1:-1]).float() / 255)
    rgb = np.asarray(Image.open(photos_dir / "chelsea.png").convert("RGB"))[:30, :40]  # (H, W, 3) uint8
    out = apply_kernel(rgb, "box_blur")
    assert out.shape == (3, 28, 38)  # arrays are read channels-last, results are channels-first
    expected = rgb[:3, :3].astype(np.float64).mean(axis=(0, 1)) / 255
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=1e-5)


def test_blur_smooths_and_sharpen_sharpens_a_real_photo(photos_dir) -> None:
    img = load_image(photos_dir / "camera.png", gray=True, size=128)[0]
    blurred = apply_kernel(img, get_kernel("gaussian", n=5, sigma=1.5), padding=2)
    sharpened = apply_kernel(img, "sharpen", padding=1)
    detail = lambda t: apply_kernel(t, "laplacian").abs().mean()  # noqa: E731 - local measure of edges
    assert detail(blurred) < 0.5 * detail(img) < detail(sharpened)
    # a normalised blur keeps the average brightness (away from the zero-padded border)
    assert blurred[4:-4, 4:-4].mean().item() == pytest.approx(img[4:-4, 4:-4].mean().item(), abs=0.01)


def test_activations_match_torch() -> None:
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(activate(x, "relu"), F.relu(x))
    torch.testing.assert_close(activate(x, "leaky_relu"), F.leaky_relu(x, 0.1))
    torch.testing.assert_close(activate(x, "sigmoid"), torch.sigmoid(x))
    torch.testing.assert_close(activate(x, "tanh"), torch.tanh(x))
    assert activate(torch.tensor([-2.0, 3.0]), "leaky_relu").tolist() == pytest.approx([-0.2, 3.0])
    with pytest.raises(CnnlabError, match="relu, leaky_relu, sigmoid, tanh"):
        activate(x, "gelu")


def test_conv_relu_pool_pipeline_on_a_photo(photos_dir) -> None:
    img = load_image(photos_dir / "coffee.png", size=80)
    st = conv_activate_pool(img, "sobel_y")
    h, w = img.shape[1:]
    assert st.conv.shape == (h - 2, w - 2) and st.conv.min() < 0 < st.conv.max()
    assert torch.equal(st.activated, st.conv.clamp(min=0))
    assert torch.equal(st.pooled, F.max_pool2d(st.activated[None, None], 2)[0, 0])
    assert torch.equal(pool(st.activated, 2, mode="avg"), F.avg_pool2d(st.activated[None, None], 2)[0, 0])


def test_images_load_and_bundled_photo_needs_no_download(photos_dir, tmp_path) -> None:
    photo = sample_image(size=100)
    assert photo.shape == (3, 67, 100) and photo.std() > 0.05  # china.jpg is 427x640
    gray = to_gray(load_image(photos_dir / "chelsea.png"))
    pil_gray = load_image(photos_dir / "chelsea.png", gray=True)
    assert (gray - pil_gray).abs().max() < 1 / 255 + 1e-6  # PIL's 'L' uses the same weights, rounded to bytes
    with pytest.raises(CnnlabError, match="no image file"):
        load_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(CnnlabError, match="cannot read"):
        load_image(junk)


def test_apply_kernel_bad_input() -> None:
    with pytest.raises(CnnlabError, match="per_channel' or 'summed"):
        apply_kernel(torch.ones(5, 5), "identity", channels="depthwise")
    with pytest.raises(CnnlabError, match=r"\(3, kh, kw\)"):
        apply_kernel(torch.ones(3, 5, 5), torch.ones(2, 3, 3), channels="summed")
    with pytest.raises(CnnlabError, match="larger than the padded input"):
        apply_kernel(torch.ones(2, 2), "sobel_x")
    with pytest.raises(CnnlabError, match="an image is"):
        apply_kernel(torch.ones(1, 1, 5, 5), "identity")
    assert kernels.list_kernels() == list(kernels.KERNELS)
