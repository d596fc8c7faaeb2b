"""The lesson widgets, driven headless: moving a control runs the same callback a learner's slider runs, and the
frame it draws says what the math says; a displayed widget carries its frame as a PNG (the static rendering)."""

from __future__ import annotations

import base64

import pytest
import torch
import torch.nn.functional as F

import cnnlab
from cnnlab.apps import widgets
from cnnlab.apps.widgets import (
    feature_frame,
    feature_map_widget,
    output_size_widget,
    size_frame,
    sliding_window_widget,
    window_frame,
)
from cnnlab.conv import explain_corr2d, explain_output_size
from cnnlab.errors import CnnlabError
from cnnlab.inspect import FeatureExtractor

PNG = b"\x89PNG\r\n\x1a\n"
X5 = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]).float()
K5 = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]]).float()


def test_sliding_the_kernel_writes_out_each_output_as_torch_computes_it() -> None:
    w = sliding_window_widget(X5, K5)
    assert w.controls["position"].max == 8  # a 3x3 output
    y = F.conv2d(X5[None, None], K5[None, None])[0, 0]
    first = w.png
    for position in range(9):
        frame = w.set(position=position)  # as the slider would
        i, j = divmod(position, 3)
        assert frame.text == str(explain_corr2d(X5, K5, i, j))
        assert frame.text.endswith(f"= {int(y[i, j])}")
        assert w.image.value == w.png and w.png.startswith(PNG)
        assert "<pre>" in w.caption.value and f"Y[{i}, {j}]" in w.caption.value
    assert w.png != first  # the picture moved with the window


def test_a_strided_padded_window_is_the_one_torch_uses() -> None:
    w = sliding_window_widget(X5, K5, stride=2, padding=1)
    y = F.conv2d(X5[None, None], K5[None, None], stride=2, padding=1)[0, 0]
    assert w.controls["position"].max == y.numel() - 1
    for position in range(y.numel()):
        i, j = divmod(position, y.shape[1])
        assert w.set(position=position).text.endswith(f"= {int(y[i, j])}")
    assert "X_padded[2:5, 0:3]" in window_frame(X5, K5, 3, stride=2, padding=1).text
    with pytest.raises(CnnlabError, match="outside the 3x3 output"):
        window_frame(X5, K5, 9, stride=2, padding=1)


def test_the_size_sliders_work_the_formula_out() -> None:
    w = output_size_widget(n=6, kernel=3, stride=2)
    assert w.frame.text == explain_output_size(6, 3, stride=2) and "remainder 1" in w.frame.text
    assert w.set(padding=1).text == explain_output_size(6, 3, padding=1, stride=2)
    assert w.set(dilation=2, stride=1).text == explain_output_size(6, 3, padding=1, stride=1, dilation=2)
    # a kernel that does not fit says why instead of failing the widget
    assert "larger than the padded input" in w.set(kernel=11, padding=0).text and w.png.startswith(PNG)
    assert size_frame(227, 11, 0, 4).text.splitlines()[-1].strip() == "= 55"


def test_picking_a_layer_and_a_channel_shows_that_map() -> None:
    model = cnnlab.get_model("lenet").eval()
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    features = FeatureExtractor(model)(x)
    w = feature_map_widget(model, x)
    maps = tuple(name for name, t in features.items() if t.dim() == 4)  # relu3 follows a dense layer: no map
    assert maps == ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2")
    assert w.controls["layer"].options == maps and w.controls["channel"].max == 5
    frame = w.set(layer="conv2", channel=15)
    m = features["conv2"][0, 15]
    assert frame.text.startswith("conv2 (Conv2d), channel 15 of 16: 10x10") and f"max {m.max().item():.3g}" in frame.text
    frame = w.set(layer="pool1")  # six channels: the slider follows, and the frame shows one that exists
    assert w.controls["channel"].max == 5 and w.controls["channel"].value == 5
    assert frame.text.startswith("pool1 (MaxPool2d), channel 5 of 6: 14x14")
    with pytest.raises(CnnlabError, match="has 6 channels"):
        feature_frame(features, "pool1", 6)


def test_a_displayed_widget_carries_its_frame_as_a_png() -> None:
    w = output_size_widget()
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # live in Jupyter
    assert base64.b64decode(bundle["image/png"]) == w.png  # the static frame, for saved notebooks and the site
    assert bundle["text/plain"] == w.frame.text


def test_without_ipywidgets_one_line_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_ipywidgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[lessons\]'"):
        widgets.output_size_widget()
