"""Reference conv and pool ops: hand-worked examples, then the same thing computed twice (ours vs torch)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.conv import conv2d, corr2d, explain_corr2d, im2col, pad2d, pool2d
from cnnlab.errors import CnnlabError

X3 = torch.arange(9.0).reshape(3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
K2 = torch.arange(4.0).reshape(2, 2)  # [[0, 1], [2, 3]]


# --- worked by hand ---


def test_corr2d_hand_example() -> None:
    # Y[0,0] = 0*0 + 1*1 + 3*2 + 4*3 = 19; each step right adds 1+2+3 = 6, each step down adds 3*6 = 18.
    expected = torch.tensor([[19.0, 25.0], [37.0, 43.0]])
    assert torch.equal(corr2d(X3, K2), expected)
    assert torch.equal(conv2d(X3[None, None], K2[None, None])[0, 0], expected)


def test_corr2d_keeps_integers_exact() -> None:
    y = corr2d(torch.arange(9).reshape(3, 3), torch.arange(4).reshape(2, 2))
    assert y.dtype == torch.int64 and y.tolist() == [[19, 25], [37, 43]]


def test_edge_kernel_finds_both_edges_of_a_bar() -> None:
    x = torch.zeros(6, 8)
    x[:, 2:6] = 1.0  # a bright vertical bar in columns 2..5
    y = corr2d(x, torch.tensor([[1.0, -1.0]]))
    expected = torch.zeros(6, 7)
    expected[:, 1] = -1.0  # Y[:, 1] = X[:, 1] - X[:, 2] = 0 - 1: the dark-to-bright edge
    expected[:, 5] = 1.0  # Y[:, 5] = X[:, 5] - X[:, 6] = 1 - 0: the bright-to-dark edge
    assert torch.equal(y, expected)
    # The transposed kernel sees horizontal edges only, and a vertical bar has none.
    assert torch.equal(corr2d(x, torch.tensor([[1.0], [-1.0]])), torch.zeros(5, 8))


def test_pool_hand_example() -> None:
    assert torch.equal(pool2d(X3, 2, stride=1), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    # mean of [[0,1],[3,4]] = 2, and each step adds 1 (right) or 3 (down)
    assert torch.equal(pool2d(X3, 2, stride=1, mode="avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    # stride defaults to the pool size: one 2x2 block fits in 3x3, the last row and column are dropped
    assert torch.equal(pool2d(X3, 2), torch.tensor([[4.0]]))


def test_pad2d_hand_example() -> None:
    y = pad2d(torch.ones(2, 2), 1)
    assert y.shape == (4, 4) and y.sum() == 4 and torch.equal(y[1:3, 1:3], torch.ones(2, 2))
    # (left, right, top, bottom) = (0, 1, 2, 0): two rows above, one column to the right
    expected = torch.tensor([[7.0, 7.0], [7.0, 7.0], [1.0, 7.0]])
    assert torch.equal(pad2d(torch.ones(1, 1), (0, 1, 2, 0), value=7), expected)


def test_padding_one_with_3x3_kernel_keeps_the_size_and_sees_zeros_at_the_border() -> None:
    ones = torch.ones(1, 1, 4, 4)
    y = conv2d(ones, torch.ones(1, 1, 3, 3), padding=1)[0, 0]
    # corners see 4 real pixels, edges 6, the inside 9: the zeros of the padding count for nothing
    assert y.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]


def test_explain_corr2d_writes_out_the_products() -> None:
    step = explain_corr2d(X3, K2, 0, 0)
    assert step.products.tolist() == [[0, 1], [6, 12]] and step.value == 19
    assert str(step).splitlines() == [
        "Y[0, 0] = sum(X[0:2, 0:2] * K)",
        "        = 0*0 + 1*1 + 3*2 + 4*3",
        "        = 0 + 1 + 6 + 12",
        "        = 19",
    ]
    negative = str(explain_corr2d(X3, -K2, 1, 1))
    assert "5*(-1)" in negative and negative.endswith("= -43")


def test_explain_corr2d_with_stride_padding_and_dilation_is_torchs_output() -> None:
    x = torch.arange(30.0).view(5, 6) % 7 - 3
    k = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    for stride, padding, dilation in [(2, 0, 1), (1, 1, 1), (2, 1, 2), (3, 2, 1)]:
        y = F.conv2d(x[None, None], k[None, None], stride=stride, padding=padding, dilation=dilation)[0, 0]
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                step = explain_corr2d(x, k, i, j, stride=stride, padding=padding, dilation=dilation)
                assert step.value == pytest.approx(y[i, j].item(), abs=1e-9)
    step = explain_corr2d(x, k, 1, 0, stride=2, padding=1, dilation=2)
    assert (step.row, step.col) == (2, 0) and step.window_text() == "X_padded[2:5:2, 0:3:2]"
    assert str(explain_corr2d(x, k, 0, 1, stride=2)).startswith("Y[0, 1] = sum(X[0:2, 2:4] * K)")


def test_dilation_spreads_the_kernel() -> None:
    # a 2x2 kernel with dilation 2 reads X[0,0], X[0,2], X[2,0], X[2,2] of the 3x3 input
    y = conv2d(X3[None, None], torch.ones(1, 1, 2, 2), dilation=2)
    assert y.shape == (1, 1, 1, 1) and y.item() == 0 + 2 + 6 + 8


# --- ours against torch on random inputs ---


def _rand(gen: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))  # odd, even and non-square kernels
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    # the input must hold the dilated kernel once padded: n + 2p >= d(k-1) + 1
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 5))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 5))
    return dict(
        n=draw(st.integers(1, 3)), c_in=draw(st.integers(1, 3)), c_out=draw(st.integers(1, 3)),
        h=h, w=w, k=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_conv2d_matches_torch_forward_and_backward(case) -> None:
    g = torch.Generator().manual_seed(case["seed"])
    x = _rand(g, case["n"], case["c_in"], case["h"], case["w"]).requires_grad_()
    wt = _rand(g, case["c_out"], case["c_in"], *case["k"]).requires_grad_()
    b = _rand(g, case["c_out"]).requires_grad_() if case["bias"] else None
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    ours, theirs = conv2d(x, wt, b, **kw), F.conv2d(x, wt, b, **kw)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # backward: the gradients autograd finds through im2col equal those of torch's own kernel
    upstream = _rand(g, *ours.shape)
    params = [x, wt] + ([b] if b is not None else [])
    grads_ours = torch.autograd.grad((ours * upstream).sum(), params)
    grads_theirs = torch.autograd.grad((theirs * upstream).sum(), params)
    for a, c in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(conv_cases())
def test_conv2d_float32_matches_torch_to_1e5(case) -> None:
    g = torch.Generator().manual_seed(case["seed"])
    x = _rand(g, case["n"], case["c_in"], case["h"], case["w"], dtype=torch.float32)
    wt = _rand(g, case["c_out"], case["c_in"], *case["k"], dtype=torch.float32)
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    assert (conv2d(x, wt, **kw) - F.conv2d(x, wt, **kw)).abs().max() < 1e-5


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_im2col_is_torch_unfold(case) -> None:
    g = torch.Generator().manual_seed(case["seed"])
    x = _rand(g, case["n"], case["c_in"], case["h"], case["w"])
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    assert torch.equal(im2col(x, case["k"], **kw), F.unfold(x, case["k"], **kw))


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 4), kw=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_corr2d_loops_match_torch(h: int, w: int, kh: int, kw: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = _rand(g, h + kh - 1, w + kw - 1)  # any size that holds the kernel
    k = _rand(g, kh, kw)
    ours = corr2d(x, k)
    torch.testing.assert_close(ours, F.conv2d(x[None, None], k[None, None])[0, 0], rtol=1e-5, atol=1e-5)
    i, j = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
    assert explain_corr2d(x, k, i, j).value == pytest.approx(ours[i, j].item(), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    pad_frac=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    extra=st.tuples(st.integers(0, 6), st.integers(0, 6)),
    mode=st.sampled_from(["max", "avg"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_pool2d_matches_torch_forward_and_backward(k, stride, pad_frac, extra, mode, seed) -> None:
    padding = (min(pad_frac[0], k[0] // 2), min(pad_frac[1], k[1] // 2))  # torch allows at most half the window
    g = torch.Generator().manual_seed(seed)
    x = _rand(g, 2, 3, k[0] + extra[0], k[1] + extra[1]).requires_grad_()
    ours = pool2d(x, k, stride, padding, mode=mode)
    fn = F.max_pool2d if mode == "max" else F.avg_pool2d
    theirs = fn(x, k, stride, padding)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    upstream = _rand(g, *ours.shape)
    (ga,) = torch.autograd.grad((ours * upstream).sum(), x)
    (gb,) = torch.autograd.grad((theirs * upstream).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    pads=st.tuples(*[st.integers(0, 3)] * 4), value=st.floats(-5, 5, allow_nan=False), seed=st.integers(0, 2**31 - 1)
)
def test_pad2d_matches_torch_forward_and_backward(pads, value, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = _rand(g, 2, 3, 4, 5).requires_grad_()
    ours, theirs = pad2d(x, pads, value), F.pad(x, pads, value=value)
    assert torch.equal(ours, theirs)
    upstream = _rand(g, *ours.shape)
    (ga,) = torch.autograd.grad((ours * upstream).sum(), x)
    (gb,) = torch.autograd.grad((theirs * upstream).sum(), x)
    assert torch.equal(ga, gb)


def test_conv2d_accepts_an_unbatched_image_like_torch() -> None:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 8, 9, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    torch.testing.assert_close(conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))


# --- bad input: one clear CnnlabError each ---


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: corr2d(torch.ones(2, 2, 2), torch.ones(2, 2)), "2-D input"),
        (lambda: corr2d(torch.ones(2, 2), torch.ones(3, 3)), "larger than the padded input"),
        (lambda: conv2d(torch.ones(1, 2, 5, 5), torch.ones(1, 3, 3, 3)), "2 channels but the weight expects 3"),
        (lambda: conv2d(torch.ones(1, 1, 5, 5), torch.ones(3, 3)), "k[None, None]"),
        (lambda: conv2d(torch.ones(5, 5), torch.ones(1, 1, 3, 3)), "(N, C, H, W)"),
        (lambda: conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 7, 7), padding=1), "more padding"),
        (lambda: conv2d(torch.ones(1, 1, 4, 4), torch.ones(2, 1, 3, 3), bias=torch.ones(3)), "one per output channel"),
        (lambda: pool2d(torch.ones(4, 4), 2, padding=2), "at most half"),
        (lambda: pool2d(torch.ones(4, 4), 2, mode="median"), "'max' or 'avg'"),
        (lambda: pool2d(torch.ones(4, 4), 5), "larger than the padded input"),
        (lambda: pad2d(torch.ones(3, 3), -1), ">= 0"),
        (lambda: explain_corr2d(X3, K2, 2, 0), "outside the 2x2 output"),
        (lambda: conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2), stride=0), "stride s must be"),
    ],
)
def test_bad_input_gives_a_clear_error(call, words: str) -> None:
    with pytest.raises(CnnlabError, match=None) as info:
        call()
    assert words in str(info.value)
