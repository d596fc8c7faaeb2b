"""Widgets for the lessons: move a slider, see the sliding window's multiply-and-sum, the output-size formula worked
out, or one feature map of a model.

Each picture is a plain function of the controls' values (`window_frame`, `size_frame`, `feature_frame`: values ->
a `Frame`, a figure and its text), which tests call without a browser; ipywidgets only wires sliders to it
(`LessonWidget`). A displayed widget also carries its current frame as a PNG: what a saved notebook, a front end
without widgets and the documentation site show in its place.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from cnnlab.conv.explain import explain_corr2d
from cnnlab.conv.ops import conv2d
from cnnlab.conv.sizes import explain_output_size, output_size
from cnnlab.errors import CnnlabError
from cnnlab.inspect.features import FeatureExtractor
from cnnlab.viz.conv import feature_map
from cnnlab.viz.style import close_figure, figure_png, new_figure, plot_style
from cnnlab.viz.window import output_size_figure, sliding_window_figure

INSTALL_HINT = "pip install 'cnnlab[lessons]'"


@dataclass
class Frame:
    """What a widget shows for one setting of its controls: a figure and the same in words."""

    figure: Figure
    text: str


def window_frame(x: torch.Tensor, k: torch.Tensor, position: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1) -> Frame:
    """The kernel at output `position` (row by row): the window, the kernel, the output so far, and the sum."""
    x, k = torch.as_tensor(x).float(), torch.as_tensor(k).float()
    y = conv2d(x[None, None], k[None, None], stride=stride, padding=padding, dilation=dilation)[0, 0]
    if not 0 <= position < y.numel():
        raise CnnlabError(f"position {position} is outside the {y.shape[0]}x{y.shape[1]} output: use 0 to "
                          f"{y.numel() - 1}")
    i, j = divmod(position, y.shape[1])
    step = explain_corr2d(x, k, i, j, stride=stride, padding=padding, dilation=dilation)
    return Frame(sliding_window_figure(x, k, step, y), str(step))


def size_frame(n: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> Frame:
    """The layer's windows over one row of the padded input and the formula worked out; a kernel that does not fit
    gives a frame saying why."""
    try:
        text = explain_output_size(n, kernel, padding, stride, dilation)
    except CnnlabError as exc:
        return _message_frame(str(exc))
    return Frame(output_size_figure(n, kernel, padding, stride, dilation), text)


def feature_frame(features: Mapping[str, torch.Tensor], layer: str, channel: int) -> Frame:
    """Channel `channel` of the map `layer` output for the first image (features as a FeatureExtractor records)."""
    if layer not in features:
        raise CnnlabError(f"no feature map named {layer!r}; recorded: {', '.join(features)}")
    maps = features[layer][0]
    if maps.dim() != 3:
        raise CnnlabError(f"{layer} outputs shape {tuple(features[layer].shape)}: not a stack of 2-D maps")
    if not 0 <= channel < maps.shape[0]:
        raise CnnlabError(f"{layer} has {maps.shape[0]} channels: choose 0 to {maps.shape[0] - 1}")
    m = maps[channel]
    kind = getattr(features, "types", {}).get(layer, "")
    title = f"{layer}{f' ({kind})' if kind else ''}, channel {channel} of {maps.shape[0]}: {m.shape[0]}x{m.shape[1]}"
    with plot_style():
        fig = new_figure((4.6, 3.8))
        feature_map(m, ax=fig.add_subplot())
        fig.suptitle(title, fontsize=9)  # one line: a panel title would wrap at the panel's width
    text = (f"{title}; min {m.min().item():.3g}, max {m.max().item():.3g}, mean {m.mean().item():.3g}, "
            f"{(m == 0).float().mean().item():.0%} zeros")
    return Frame(fig, text)


def _message_frame(message: str) -> Frame:
    with plot_style():
        fig = new_figure((6.0, 1.2))
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.0, 0.5, message, wrap=True, va="center", ha="left", color="#b2182b")
    return Frame(fig, message)


class LessonWidget:
    """Controls wired to a frame function: each change redraws `frame` (shown as `image` and `caption`).

    `controls` maps the frame function's argument names to ipywidgets; `set(name=value)` moves them as a learner
    would (the same callbacks run), so a test can drive the widget without a browser.
    """

    def __init__(self, draw: Callable[..., Frame], controls: Mapping[str, Any], extra: Sequence[Any] = ()):
        widgets = ipywidgets()
        self.draw, self.controls = draw, dict(controls)
        self.image = widgets.Image(format="png")
        self.caption = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([*extra, *self.controls.values()]), self.image, self.caption])
        self.frame: Frame | None = None
        self.png = b""
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    def update(self, change: Any = None) -> Frame:
        """Redraw from the controls' current values (the callback every control calls)."""
        frame = self.draw(**{name: c.value for name, c in self.controls.items()})
        self.png = figure_png(frame.figure)
        close_figure(frame.figure)
        self.frame = frame
        self.image.value = self.png
        self.caption.value = f"<pre>{html.escape(frame.text)}</pre>"
        return frame

    def set(self, **values: Any) -> Frame:
        """Move controls to these values, as a learner would; the frame they lead to."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise CnnlabError(f"no control named {', '.join(sorted(unknown))}; controls: {', '.join(self.controls)}")
        for name, value in values.items():
            self.controls[name].value = value
        return self.frame  # type: ignore[return-value]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")  # the static frame, for saved notebooks
        bundle["text/plain"] = self.frame.text if self.frame else ""
        return bundle


def ipywidgets():
    """The ipywidgets module, or one line saying how to install it."""
    try:
        import ipywidgets as widgets
    except ImportError:
        raise CnnlabError(f"the lesson widgets need ipywidgets: {INSTALL_HINT}") from None
    return widgets


def sliding_window_widget(x: torch.Tensor, k: torch.Tensor, stride: int = 1, padding: int = 0,
                          dilation: int = 1) -> LessonWidget:
    """Slide K over X one output at a time (a slider and a play button): the window, the products and their sum."""
    widgets = ipywidgets()
    x = torch.as_tensor(x)
    kh, kw = torch.as_tensor(k).shape
    outputs = output_size(x.shape[0], kh, padding, stride, dilation) * output_size(x.shape[1], kw, padding, stride,
                                                                                    dilation)
    position = widgets.IntSlider(0, 0, outputs - 1, description="position")
    play = widgets.Play(value=0, min=0, max=outputs - 1, interval=900, description="play")
    widgets.jslink((play, "value"), (position, "value"))

    def draw(position: int) -> Frame:
        return window_frame(x, k, position, stride, padding, dilation)

    return LessonWidget(draw, {"position": position}, extra=[play])


def output_size_widget(n: int = 7, kernel: int = 3, padding: int = 0, stride: int = 1, dilation: int = 1,
                       largest: int = 32) -> LessonWidget:
    """Sliders for n, k, p, s and d: the windows over the input, the output size and the formula worked out."""
    widgets = ipywidgets()
    controls = {
        "n": widgets.IntSlider(n, 1, largest, description="input n"),
        "kernel": widgets.IntSlider(kernel, 1, 11, description="kernel k"),
        "padding": widgets.IntSlider(padding, 0, 5, description="padding p"),
        "stride": widgets.IntSlider(stride, 1, 5, description="stride s"),
        "dilation": widgets.IntSlider(dilation, 1, 4, description="dilation d"),
    }
    return LessonWidget(size_frame, controls)


def feature_map_widget(model: nn.Module, x: torch.Tensor, layers: Any = None) -> LessonWidget:
    """Pick a layer and a channel: that feature map of the model for input `x` (one image, as the model takes it)."""
    widgets = ipywidgets()
    was_training = model.training
    model.eval()
    try:
        features = FeatureExtractor(model, layers)(x if x.dim() == 4 else x[None])
    finally:
        model.train(was_training)
    maps = [name for name, t in features.items() if t.dim() == 4]
    if not maps:
        raise CnnlabError("the chosen layers output no 2-D feature maps")
    layer = widgets.Dropdown(options=maps, value=maps[0], description="layer")
    channel = widgets.IntSlider(0, 0, features[maps[0]].shape[1] - 1, description="channel")

    def fit_channels(change: Any) -> None:  # registered first: the redraw sees a channel the layer has
        channel.max = features[change["new"]].shape[1] - 1

    layer.observe(fit_channels, names="value")

    def draw(layer: str, channel: int) -> Frame:
        return feature_frame(features, layer, channel)

    return LessonWidget(draw, {"layer": layer, "channel": channel})
