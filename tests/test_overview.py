"""The whole network in one hooked pass, and one value worked out by hand: every worked value is checked against the
forward pass and against torch's own functions (F.conv2d, the pooling functions, the activation modules, softmax),
for every padding, stride, dilation and groups setting the zoo uses and more."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.inspect import FeatureExtractor
from cnnlab.inspect.elementwise import CannotWorkOut, activation_formula, work_batchnorm
from cnnlab.inspect.layers import ACTIVATION_TYPES
from cnnlab.inspect.neuron import work_value
from cnnlab.inspect.overview import layer_groups, record_overview


def corners_and_middle(shape) -> list[tuple[int, int, int]]:
    c, h, w = shape
    return [(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w // 3), (c - 1, 0, w - 1), (0, h - 1, 0)]


def from_patch(r: dict) -> float:
    """The multiply-and-sum redone from the numbers the reply returned, nothing else."""
    flat = lambda t: [v for row in t for v in (flat(row) if isinstance(row, list) else [row])]  # noqa: E731
    return sum(a * b for a, b in zip(flat(r["patch"]), flat(r["kernel"]), strict=True)) + r["bias"]


def classifier(*layers: nn.Module, channels: int) -> nn.Module:
    """The layers under test, then a global average, a flatten and a linear layer: a classifier with 3 classes."""
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3)).eval()


def assert_close(a: float, b: float, scale: float = 0.0) -> None:
    assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6 * (1 + scale)), (a, b)


# ---------------------------------------------------------------- conv, against F.conv2d


def _same_conv(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Module:
    from timm.layers import Conv2dSame  # TensorFlow's "same" padding, worked out in forward (EfficientNet-Lite0)

    return Conv2dSame(cin, cout, k, stride=stride, groups=groups)


CONVS = {
    "plain": lambda: nn.Conv2d(3, 4, 3),
    "padded, stride 2": lambda: nn.Conv2d(3, 4, 5, stride=2, padding=2),
    "uneven padding and stride": lambda: nn.Conv2d(2, 3, (3, 5), stride=(2, 1), padding=(2, 1)),
    "same": lambda: nn.Conv2d(2, 3, 4, padding="same"),  # an even kernel: the odd zero goes at the end
    "dilated": lambda: nn.Conv2d(2, 3, 3, padding=2, dilation=2),
    "groups": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "depthwise": lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
    "1x1": lambda: nn.Conv2d(5, 3, 1),
    "reflect": lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
    "circular": lambda: nn.Conv2d(2, 2, 3, padding=2, padding_mode="circular"),
    "replicate, stride 3": lambda: nn.Conv2d(2, 2, 3, stride=3, padding=1, padding_mode="replicate"),
    "timm same, stride 2": lambda: _same_conv(3, 4, 3, 2),
    "timm same, depthwise 5x5": lambda: _same_conv(4, 4, 5, 2, groups=4),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_a_conv_value_is_its_patch_times_its_kernel_plus_bias(name: str) -> None:
    torch.manual_seed(0)
    conv = CONVS[name]()
    model = classifier(conv, nn.ReLU(), channels=conv.out_channels)
    x = torch.randn(1, conv.in_channels, 11, 13)
    seen = record_overview(model, x)
    with torch.no_grad():
        ref = conv(x)[0]  # torch's own convolution, padding included
    if type(conv).forward is nn.Conv2d.forward and conv.padding_mode == "zeros":
        ref = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)[0]
    assert seen.layers["0"].output[0].shape == ref.shape
    for c, i, j in corners_and_middle(ref.shape):
        r = work_value(seen, "0", c, i, j)
        scale = sum(abs(v) for ch in r["products"] for row in ch for v in row)
        assert r["agrees"], (name, c, i, j, r["sum"], r["value"])
        assert_close(r["sum"], float(ref[c, i, j]), scale)  # equal to torch's convolution
        assert r["value"] == pytest.approx(float(ref[c, i, j]), abs=1e-6)  # value: the forward pass's
        assert from_patch(r) == pytest.approx(r["sum"], rel=1e-12, abs=1e-12)  # sum: from the returned numbers
        per_group = conv.in_channels // conv.groups
        assert len(r["patch"]) == per_group and r["in_channels"][1] - r["in_channels"][0] == per_group
        assert r["in_channels"][0] == c // (conv.out_channels // conv.groups) * per_group
        kh, kw = conv.kernel_size
        assert [len(r["kernel"][0]), len(r["kernel"][0][0])] == [kh, kw]
        # The padding mask: exactly the window's cells outside the input.
        dh, dw = conv.dilation
        rows = [r["window"]["row0"] + a * dh for a in range(kh)]
        cols = [r["window"]["col0"] + b * dw for b in range(kw)]
        assert r["padding"] == [[not (0 <= y < 11 and 0 <= q < 13) for q in cols] for y in rows]
        if conv.padding_mode == "zeros":
            assert all(v == 0 for ch in r["patch"] for row, pad in zip(ch, r["padding"]) for v, p in zip(row, pad)
                       if p)
            for ch in range(per_group):
                for a, y in enumerate(rows):
                    for b, q in enumerate(cols):
                        if not r["padding"][a][b]:  # the input's own float32 value (9 digits say it exactly)
                            assert torch.tensor(r["patch"][ch][a][b]) == x[0, r["in_channels"][0] + ch, y, q]


def test_worked_conv_sum_is_the_teaching_conv2d_too() -> None:
    """The same value three ways: the worked sum, cnnlab.conv's im2col conv2d, and torch."""
    from cnnlab.conv import conv2d

    torch.manual_seed(1)
    conv = nn.Conv2d(3, 2, 3, stride=2, padding=1)
    seen = record_overview(classifier(conv, channels=2), x := torch.randn(1, 3, 9, 9))
    ours = conv2d(x, conv.weight.detach(), conv.bias.detach(), stride=2, padding=1)[0]
    r = work_value(seen, "0", 1, 2, 3)
    assert r["sum"] == pytest.approx(float(ours[1, 2, 3]), rel=1e-5)


# ---------------------------------------------------------------- pools, activations, BatchNorm


POOLS = {
    "max 2x2": lambda: nn.MaxPool2d(2),
    "max 3x3 stride 2 padded": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "max dilated, ceil": lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True),
    "avg padded": lambda: nn.AvgPool2d(3, stride=2, padding=1),
    "avg without padding counted": lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    "avg ceil": lambda: nn.AvgPool2d(2, stride=2, ceil_mode=True),
    "avg divisor": lambda: nn.AvgPool2d(2, divisor_override=3),
    "adaptive avg 7 -> 3": lambda: nn.AdaptiveAvgPool2d(3),
    "adaptive max to 1x1": lambda: nn.AdaptiveMaxPool2d(1),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_a_pooled_value_is_its_windows_max_or_mean(name: str) -> None:
    torch.manual_seed(2)
    pool = POOLS[name]()
    x = torch.randn(1, 2, 7, 7)
    seen = record_overview(classifier(nn.Conv2d(2, 2, 1), pool, channels=2), x)
    inp, ref = seen.layers["0"].output, seen.layers["1"].output[0]
    with torch.no_grad():
        assert torch.equal(pool(inp)[0], ref)
    for c, i, j in corners_and_middle(ref.shape):
        r = work_value(seen, "1", c, i, j)
        assert r["agrees"] and r["result"] == pytest.approx(float(ref[c, i, j]), rel=1e-5, abs=1e-6), (r, c, i, j)
        inside = [v for row in r["window"] for v in row if v is not None]
        if r["op"] == "max":
            a, b = r["kept_index"]
            assert r["window"][a][b] == max(inside) and r["kept"] == [r["rows"][a], r["cols"][b]]
        else:
            assert r["result"] == pytest.approx(sum(inside) / r["divisor"])


@pytest.mark.parametrize("module", [t() for t in ACTIVATION_TYPES if t not in (nn.PReLU, nn.RReLU)]
                         + [nn.LeakyReLU(0.2), nn.ELU(0.5), nn.GELU(approximate="tanh"), nn.Softplus(2.0, 5.0),
                            nn.Hardtanh(-2, 3), nn.CELU(0.7)], ids=lambda m: repr(m))
def test_each_activation_formula_equals_torch(module: nn.Module) -> None:
    text, f = activation_formula(module)
    xs = torch.tensor([-7.0, -3.0, -1.2, -0.3, 0.0, 0.4, 1.0, 2.5, 3.0, 6.5, 30.0])
    ref = module(xs.double())
    assert [f(float(v)) for v in xs] == pytest.approx(ref.tolist(), rel=1e-9, abs=1e-12), text


def test_batchnorm_and_prelu_and_what_is_not_written_out() -> None:
    torch.manual_seed(3)
    bn = nn.BatchNorm2d(3, eps=1e-3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    model = classifier(nn.Conv2d(2, 3, 3), bn.eval(), nn.PReLU(3), nn.LPPool2d(2, 2), channels=3)
    x = torch.randn(1, 2, 8, 8)
    seen = record_overview(model, x)
    with torch.no_grad():
        ref = bn(seen.layers["0"].output)
    assert work_batchnorm(bn, float(seen.layers["0"].output[0, 1, 2, 3]), 1)["result"] == \
        pytest.approx(float(ref[0, 1, 2, 3]), rel=1e-5)
    r = work_value(seen, "2", 1, 2, 3)  # PReLU, its slope learned per channel
    assert r["agrees"] and [s["layer"] for s in r["chain"]] == ["0", "1", "2"]
    assert all(s.get("agrees", True) for s in r["chain"])
    with pytest.raises(CannotWorkOut, match="LPPool2d"):
        work_value(seen, "3", 0, 0, 0)
    with pytest.raises(CannotWorkOut):
        work_batchnorm(nn.BatchNorm2d(3, track_running_stats=False), 1.0, 0)


# ---------------------------------------------------------------- the zoo's networks, every layer


ZOO = [("lenet", (1, 28, 28), {}), ("fastnet", (1, 28, 28), {}), ("resnet9", (3, 32, 32), {}),
       ("lenet5", (1, 28, 28), {}), ("efficientnet_lite0", (3, 96, 96), {"weights": "DEFAULT"})]


@pytest.mark.parametrize("name, size, kwargs", ZOO, ids=[z[0] for z in ZOO])
def test_every_map_of_a_zoo_network_is_worked_out_exactly(name: str, size, kwargs) -> None:
    torch.manual_seed(4)
    model = cnnlab.get_model(name, num_classes=10, input_size=size, **kwargs).eval()
    x = torch.randn(1, *size)
    seen = record_overview(model, x)
    with FeatureExtractor(model) as fx, torch.no_grad():
        logits = model(x)
    assert seen.logits.tolist() == pytest.approx(logits[0].tolist(), abs=1e-6)
    assert seen.probs.tolist() == pytest.approx(F.softmax(logits, 1)[0].tolist(), abs=1e-6)
    kinds = {seen.layers[k].kind for k in seen.shown}
    assert kinds <= {"conv", "act", "pool"} and "conv" in kinds
    for key in seen.shown:
        assert torch.equal(seen.layers[key].output, fx.features[key])  # the maps are the forward pass's
        for c, i, j in corners_and_middle(seen.layers[key].output.shape[1:]):
            r = work_value(seen, key, c, i, j)
            assert r["agrees"], (key, c, i, j)
            assert all(s.get("agrees", True) and "note" not in s for s in r["chain"]), (key, r["chain"])
    k = int(seen.probs.argmax())
    r = work_value(seen, seen.head, k)
    assert r["agrees"] and r["softmax"]["agrees"] and r["softmax"]["result"] == pytest.approx(float(seen.probs[k]))
    listed = sum(t["product"] for t in r["contributions"])
    assert listed + r["others"]["sum"] + r["bias"] == pytest.approx(r["sum"], rel=1e-9)
    assert len(r["contributions"]) == min(10, r["inputs"])
    products = [abs(t["product"]) for t in r["contributions"]]
    assert products == sorted(products, reverse=True)


def test_the_chain_follows_conv_batchnorm_activation_at_one_position() -> None:
    fast = cnnlab.get_model("fastnet", num_classes=10).eval()
    seen = record_overview(fast, torch.randn(1, 1, 28, 28))
    assert [(s["layer"], s["kind"]) for s in work_value(seen, "conv1.conv", 3, 4, 5)["chain"]] == \
        [("conv1.conv", "conv"), ("conv1.bn", "norm"), ("conv1.relu", "act")]
    # conv2 pools before its BatchNorm: the pool moves positions, so the chain starts again at the pool.
    assert [s["layer"] for s in work_value(seen, "conv2.relu", 0, 1, 1)["chain"]] == \
        ["conv2.pool", "conv2.bn", "conv2.relu"]
    lite = cnnlab.get_model("efficientnet_lite0", num_classes=3, input_size=(3, 64, 64)).eval()
    seen = record_overview(lite, torch.randn(1, 3, 64, 64))
    steps = work_value(seen, "blocks.1.0.bn2.act", 5, 3, 3)["chain"]  # timm's BatchNormAct2d: the act inside
    assert [s["layer"] for s in steps] == ["blocks.1.0.conv_dw", "blocks.1.0.bn2", "blocks.1.0.bn2.act"]
    assert steps[1]["value"] == steps[2]["input"] and all(s.get("agrees", True) for s in steps)


def test_a_reused_layer_and_an_in_place_relu_are_recorded_as_they_ran() -> None:
    torch.manual_seed(5)
    resnet = cnnlab.get_model("resnet18", num_classes=4, input_size=(3, 32, 32)).eval()
    seen = record_overview(resnet, torch.randn(1, 3, 32, 32))
    assert "layer1.0.relu" in seen.shown and "layer1.0.relu#2" in seen.shown  # BasicBlock runs its ReLU twice
    r = work_value(seen, "layer1.0.relu#2", 3, 2, 2)
    assert r["agrees"] and r["input"] != r["value"] or r["input"] >= 0
    relu_in = seen.layers["relu"].input  # the stem's in-place ReLU: its input kept as it was, negative values too
    assert float(relu_in.min()) < 0 and torch.equal(seen.layers["relu"].output, relu_in.clamp(min=0))


def test_layer_groups_are_the_blocks_with_two_or_more_layers() -> None:
    names = ["conv_stem", "bn1.act", "blocks.0.0.conv_dw", "blocks.0.0.bn1.act", "blocks.1.0.conv_pw", "fc"]
    assert layer_groups(names) == {"conv_stem": "", "bn1.act": "", "blocks.0.0.conv_dw": "blocks.0.0",
                                   "blocks.0.0.bn1.act": "blocks.0.0", "blocks.1.0.conv_pw": "blocks", "fc": ""}


def test_a_layer_or_position_that_does_not_exist_is_one_clear_error() -> None:
    seen = record_overview(cnnlab.get_model("lenet", num_classes=10).eval(), torch.randn(1, 1, 28, 28))
    with pytest.raises(CnnlabError, match=r"no layer 'conv9'.*Did you mean: conv2, conv1.*the last linear layer: fc2"):
        work_value(seen, "conv9", 0)
    with pytest.raises(CnnlabError, match=r"outside conv1's 6x28x28 output: use 0 <= channel < 6"):
        work_value(seen, "conv1", 6, 0, 0)
    with pytest.raises(CnnlabError, match=r"0 <= row < 28"):
        work_value(seen, "conv1", 0, 28, 0)
    with pytest.raises(CnnlabError, match=r"linear layer with 10 outputs"):
        work_value(seen, "fc2", 0, 1, 0)
    with pytest.raises(CnnlabError, match=r"not maps"):
        work_value(seen, "relu3", 0)


def test_single_logit_and_scaled_logits_are_said_as_they_are() -> None:
    torch.manual_seed(6)
    cats = cnnlab.get_model("small_convnet", num_classes=1, input_size=(3, 64, 64)).eval()
    seen = record_overview(cats, torch.randn(1, 3, 64, 64))
    soft = work_value(seen, seen.head, 0)["softmax"]  # one logit: the score of class 1
    assert soft["function"] == "sigmoid" and soft["agrees"] and seen.probs.shape == (2,)
    assert soft["result"] == pytest.approx(float(torch.sigmoid(seen.logits[0])), rel=1e-6)
    res = cnnlab.get_model("resnet9", num_classes=10).eval()  # its logits are fc's outputs times 0.125
    seen = record_overview(res, torch.randn(1, 3, 32, 32))
    r = work_value(seen, "fc", 2)
    assert r["agrees"] and r["logit"] == pytest.approx(r["value"] * 0.125, rel=1e-5) and "scales" in r["note"]


def test_an_activation_of_channels_last_linear_outputs_is_not_drawn_as_maps() -> None:
    """ConvNeXt's blocks: a depthwise conv, then Linear -> GELU -> Linear on (N, H, W, C): those are not maps."""
    from torchvision.ops import Permute

    torch.manual_seed(7)
    block = [nn.Conv2d(3, 4, 3, padding=1, groups=1), Permute([0, 2, 3, 1]), nn.Linear(4, 8), nn.GELU(),
             nn.Linear(8, 4), Permute([0, 3, 1, 2]), nn.ReLU()]
    seen = record_overview(classifier(*block, channels=4), torch.randn(1, 3, 6, 6))
    assert seen.shown == ["0", "6", "7"] and seen.layers["3"].output.shape == (1, 6, 6, 8)  # 7: the global pool
    assert work_value(seen, "6", 3, 5, 5)["agrees"]

