"""The lessons (lessons/*.ipynb): committed clean and complete; each executed top to bottom on the real data, with
every number its text states checked; `cnnlab lessons` lists and opens them; the documentation site, built from the
executed copies, passes strict mode and shows the widgets' static frames.

The lessons run once per session (a few minutes in all); the site build reuses their executed copies.

Every number in a lesson's text is checked (`test_every_number_in_the_text_is_checked_or_quoted`). The numbers are
read from the markdown cells: percentages and ranges of them (97-98.5%), decimals (2.30, 1e-4), numbers with
thousands separators (100,480), magnitudes (4.7 million, 3.4M) and plain integers, in the prose before the
Exercises (questions: their numbers are givens, their answers are printed by the solution cell) and the Sources
(citations); headings, code spans, code blocks, link targets and HTML tags are not prose. Each number must be

1. claimed: inside the `said` words of one of the lesson's CLAIMS below, which the slow tier checks against the
   value the executed lesson computed (a trained figure within the range the text states, a worked value exactly);
2. quoted: inside `<span class="quoted" title="where it is from">...</span>`, a figure quoted from elsewhere (a
   paper, a tutorial, the README's measured tables) that the lesson does not compute; the site underlines it and
   shows the title on hover;
3. given: a value the lesson's code types in (a size, a count, a setting: its value is a literal in a code cell,
   so text and code say the same), or a single digit (counts, ordinals, lesson numbers, small kernel sides).
   Percentages are never given: a percentage is a measured figure, claimed or quoted.

Anything else fails the test, which names the lesson, the number and its sentence.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any, Callable, NamedTuple

import nbformat
import pytest

from cnnlab.cli import lessons as cli_lessons
from cnnlab.cli.main import main
from test_site import check_site_in_browser

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cnnlab_lessons_execute", ROOT / "lessons" / "execute.py")
execute = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look themselves up there
_spec.loader.exec_module(execute)
LESSON_NUMBERS = list(range(1, 9))


class Range(NamedTuple):
    """A trained or measured figure: the lesson states it as a range, and the run must land inside it."""

    low: float
    high: float

    def check(self, value: float) -> bool:
        return self.low <= value <= self.high

    def bounds(self) -> tuple[float, ...]:
        return self.low, self.high


class Above(NamedTuple):
    """A figure the lesson states as a bound: 'above 60%', 'more than half'."""

    bound: float

    def check(self, value: float) -> bool:
        return value > self.bound

    def bounds(self) -> tuple[float, ...]:
        return (self.bound,)


class Below(NamedTuple):
    bound: float

    def check(self, value: float) -> bool:
        return value < self.bound

    def bounds(self) -> tuple[float, ...]:
        return (self.bound,)


class Rounds(NamedTuple):
    """A figure the lesson states rounded: the value times `scale`, rounded to `digits` decimals, is `shown`
    (Rounds(1.4, 1, 1e-6): '1.4 million')."""

    shown: float
    digits: int
    scale: float = 1.0

    def check(self, value: float) -> bool:
        return round(value * self.scale, self.digits) == self.shown

    def bounds(self) -> tuple[float, ...]:
        return (self.shown / self.scale,)


STATED = (Range, Above, Below, Rounds)


class Claim(NamedTuple):
    """A number a lesson promises: the variable holding it, what it must be, and the lesson's words for it."""

    name: str
    expected: Any  # a value (compared exactly), a Range/Above/Below/Rounds, or a check f(value, all values) -> bool
    said: str | None = None  # the words in the lesson's text that state it, so text and check cannot drift


def close_to(other: str, tol: float) -> Callable[[Any, dict], bool]:
    return lambda value, values: abs(value - values[other]) <= tol


def in_range(low: float, high: float, index: int) -> Callable[[Any, dict], bool]:
    """One entry of a list within a range (a figure the text states as a range)."""
    return lambda value, values: low <= value[index] <= high


CLAIMS: dict[int, list[Claim]] = {
    1: [
        Claim("toy_shapes", [[1, 6, 6], [1, 1, 6, 6]]),
        Claim("flat_order", [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]),
        Claim("flat_shape", [16, 784], "16 rows of 784 numbers"),
        Claim("split_sizes", [55000, 5000, 10000], "holds 5,000 training images back for validation (the same ones "
                                                   "every time), so the splits are 55,000 / 5,000 / 10,000"),
        Claim("split_sizes", lambda v, _: v[2] == 10000, "the 10,000 test digits"),
        Claim("batch_shape", [16, 1, 28, 28]),
        Claim("mlp_shape", [784, 128, 10], "flattens each image into 784 numbers, multiplies them by a 128x784 matrix "
                                           "(plus a bias), applies ReLU, and maps the 128 values to 10 class scores"),
        Claim("fc1_params", 100480, "784 x 128 + 128 = 100,480"),
        Claim("mlp_params", 101770, "101,770"),
        Claim("mlp_setup", ["adamw", "onecycle"]),
        Claim("mlp_acc", Range(0.97, 0.985), "97-98.5%"),
        Claim("acc_plain", close_to("mlp_acc", 1e-6)),
        Claim("acc_shuffled", close_to("acc_plain", 2e-4), "exactly as well"),
        Claim("acc_shift3", Range(0.40, 0.70), "40-70%"),
        Claim("small_params", 25450),
    ],
    2: [
        Claim("Y", [[19.0, 25.0], [37.0, 43.0]], "[[19, 25], [37, 43]]"),
        Claim("torch_diff", 0.0),
        Claim("Y_flipped", [[5.0, 11.0], [23.0, 29.0]], "[[5, 11], [23, 29]]"),
        Claim("first5", 4.0, "Its first output, worked by hand, is 4"),
        Claim("Y5", [[4.0, 3.0, 4.0], [2.0, 4.0, 3.0], [2.0, 3.0, 4.0]],
              "[[4, 3, 4], [2, 4, 3], [2, 3, 4]], with 4, 4, 4 down its diagonal"),
        Claim("edge_row", [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]),
        Claim("horizontal_response", 0.0),
        Claim("sobel_kernels", [[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                                [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]], "three rows weigh 1, 2, 1"),
        Claim("photo_shape", [171, 256]),
        Claim("sobel_shape", [169, 254]),
        Claim("gaussian_sum", lambda v, _: abs(v - 1) < 1e-6),
        Claim("edge_error", Below(1e-3)),
        Claim("sobel_error", Below(1e-3), "within 0.001"),
    ],
    3: [
        Claim("out_5_3", 3, "A 5x5 input and a 3x3 kernel give 3"),
        Claim("same_size", 8, "turns 8x8 into 8x8"),
        Claim("strided", [[4.0, 4.0], [2.0, 4.0]], "(5 - 3) / 2 + 1 = 2 on each side: [[4, 4], [2, 4]]"),
        Claim("alexnet", [55, 54, 55], "55x55 from a 227x227"),
        Claim("alexnet", [55, 54, 55], "224 gives floor(213 / 4) + 1 = 54"),
        Claim("alexnet", [55, 54, 55], "pads by 2, which gives 55 again"),
        Claim("exercise_sizes", [28, 111, 176], "give 28, 111 and 176"),
        Claim("torch_sizes", [28, 111, 176]),
        Claim("dilated", 3, "it fits 3 times"),
        Claim("Y2", [[56.0, 72.0], [104.0, 120.0]], "[[56, 72], [104, 120]]"),
        Claim("Y2_conv", [[[56.0, 72.0], [104.0, 120.0]]]),
        Claim("Y3", [[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]],
                     [[96.0, 128.0], [192.0, 224.0]]]),
        Claim("volume_out", [4, 4], "(11 - 5) / 2 + 1 = 4"),
        Claim("volume_by_hand", True),
        Claim("filter_params", 101, "5 x 5 x 4 + 1 = 101"),
        Claim("pool_max", [[4.0, 5.0], [7.0, 8.0]], "max [[4, 5], [7, 8]]"),
        Claim("pool_avg", [[2.0, 3.0], [5.0, 6.0]], "[[2, 3], [5, 6]]"),
        Claim("pool_padded", [[5.0, 7.0], [13.0, 15.0]], "[[5, 7], [13, 15]]"),
        Claim("pooled_shape", [3, 42, 64], "171x256 becomes 42x64"),
    ],
    4: [
        Claim("stage_shapes", {"conv": [1, 8, 85, 128], "relu": [1, 8, 85, 128], "pool": [1, 8, 42, 64]}),
        Claim("relu_zero_fraction", Above(0.5), "more than half"),
        Claim("leaky_zero_fraction", 0.0),
        Claim("leaky_slope", Rounds(0.1, 4), "LeakyReLU(0.1)"),
        Claim("leaky_slope", Rounds(0.1, 4), "multiplies them by 0.1 instead"),
        Claim("change_relu", lambda v, _: 0 < v < 1),
        Claim("change_pool", lambda v, values: v < values["change_relu"], "changes the pooled maps less"),
        Claim("lenet_filters", [6, 16], "with 6 and then 16 filters"),
        Claim("digits_input", [1, 28, 28], "(resized to 28x28)"),
        Claim("digits_acc", Range(0.95, 0.99), "95-99%"),
    ],
    5: [
        Claim("lenet5_params", 61706, "61,706 parameters for 28x28 digits"),
        Claim("lenet5_hidden", [120, 84], "drops the 120-unit layer"),
        Claim("lenet_params", 37106, "37,106"),
        Claim("lenet_sizes", [28, 14, 10, 5], "28 -> 28 (padding 2) -> 14 -> 10 -> 5"),
        Claim("lenet_flat", 400, "16 x 5 x 5 = 400"),
        Claim("hand_acc", Range(0.88, 0.95), "88-95%"),
        Claim("pieces_acc", Range(0.88, 0.95)),
        Claim("train_acc", Range(0.88, 0.95)),
        Claim("max_prob", Rounds(0.232, 3), "23.2%"),
        Claim("loss_start", Rounds(2.30, 2), "ln 10 = 2.30"),
        Claim("loss_start", Rounds(2.30, 2), "a loss of 2.30"),
        Claim("loss_start", Rounds(2.30, 2), "the 2.30 plateau"),
        Claim("loss_floor", Rounds(1.46, 2), "below 1.46"),
        Claim("grad_ratio", Rounds(10.8, 1), "10.8 times smaller"),
        Claim("tutorial_sgd", ["sgd", 0.01, 0.0, 10], "SGD at lr 0.01 without momentum"),
        Claim("tutorial_sgd", ["sgd", 0.01, 0.0, 10], "plain SGD at lr 0.01"),
        Claim("tutorial_sgd", ["sgd", 0.01, 0.0, 10], "the tutorial's 10 epochs"),
        Claim("mlp_broken_acc", Range(0.35, 0.60), "the broken MLP gets 35-60%"),
        Claim("mlp_fixed_acc", Range(0.85, 0.93), "the fixed one 85-93%"),
        Claim("plateau_loss", Rounds(2.30, 2), "still 2.30"),
        Claim("lenet_accs", lambda v, _: round(v[0], 1) == 0.1, "its accuracy is chance, 10%"),
        Claim("lenet_accs", lambda v, _: v[1] > 0.6, "above 60% after"),
    ],
    6: [
        Claim("cnn_widths", [32, 64, 128, 625, 10],
              "with 32, 64 and 128 channels; then a 625-unit layer and 10 outputs"),
        Claim("cnn_widths", lambda v, _: v[3] == 625, "reach the 625-unit layer"),
        Claim("dropout_p", 0.3, "dropout(0.3)"),
        Claim("dropout_p", 0.3, "a random 30% of the values"),
        Claim("block3_pool", [1, 4, 3], "floor((7 + 2*1 - 2) / 2) + 1 = 4, where without padding it would be 3"),
        Claim("cnn_sizes", [14, 7, 4], "28 -> 14 -> 7 -> 4"),
        Claim("cnn_flat", 2048, "128 x 4 x 4 = 2,048"),
        Claim("cnn_flat", 2048, "no longer has 2,048 values"),
        Claim("cnn_params", Rounds(1.4, 1, 1e-6), "1.4 million parameters"),
        Claim("seed_cnn_setup", ["adam", 0.001, 100, 3], "Adam (lr 0.001, batches of 100) for 3 epochs"),
        Claim("cnn_acc", Range(0.93, 0.98), "93-98%"),
        Claim("shape_error", lambda v, _: "fc1" in v and "in_features=" in v),
        Claim("fixed_sizes", [16, 8, 5], "32 -> 16 -> 8 -> 5"),
        Claim("fixed_fc1_inputs", 3200, "128 x 5 x 5 = 3,200"),
        Claim("folder_sizes", lambda v, _: sum(v) == 195 and v[2] == 150, "50 per shoe to test on"),
        Claim("folder_sizes", lambda v, _: 40 <= v[0] < 50, "the 40-odd training images"),
        Claim("folder_sizes", lambda v, _: 40 <= v[0] < 50, "some 40 images"),
        Claim("val_fraction", Rounds(0.1, 1), "holds 10% of train/ back"),
        Claim("cat_top", "Egyptian cat", "class Egyptian cat"),
        Claim("lite_params", Rounds(4.7, 1, 1e-6), "4.7 million weights with its 1000-class ImageNet head"),
        Claim("frozen_input", [3, 64, 64], "at 64x64 (the 28x28 images scaled up"),
        Claim("scratch_params", Rounds(3.4, 1, 1e-6), "the 3.4 million weights of the three-class network"),
        Claim("transfer_accs", lambda v, _: v[1] > v[0] + 0.05, "the frozen\nbackbone's features do far better"),
        Claim("transfer_accs", lambda v, _: v[2] < v[1], "Fine-tuning does worse here than the frozen head"),
        Claim("export_check", [1e-4, 1e-5, True], "agree to within 1e-4 (plus 1e-5 of each logit's size)"),
        Claim("same_top_class", True),
    ],
    7: [
        Claim("dense_inputs", 3072, "32 x 32 x 3 = 3,072"),
        Claim("conv1_params", 456, "6 x (5 x 5 x 3 + 1) = 456"),
        Claim("conv1_outputs", 4704, "6 x 28 x 28 = 4,704"),
        Claim("dense_params", 14455392, "3,072 x 4,704 + 4,704 = 14,455,392"),
        Claim("ratio", Rounds(31700, -2), "31,700 times as many"),
        Claim("matrix_shape", [16, 36], "16 outputs from 36 inputs make a 16x36 matrix"),
        Claim("matrix_nonzero", 144, "144 of its entries are not zero"),
        Claim("matrix_distinct", 9, "only 9 different values"),
        Claim("shared_diff", Below(1e-5)),
        Claim("lenet_rf", [5, 6, 14, 16], "5 -> 6 -> 14 -> 16: one unit of its last pooling layer sees a 16x16 patch"),
        Claim("fastnet_rf", [5, 9, 11, 19, 27], "5 -> 9 -> 11 -> 19 -> 27"),
        Claim("fastnet_rf", lambda v, _: v[-1] == 27, "one field of 27x27, not 28x28"),
        Claim("conv1_starts", lambda v, _: v[:2] == [0, 2] and v[-1] == 22, "windows start at 0, 2, ..., 22"),
        Claim("fastnet_seen", [0, 27], "the last one ends at pixel 26; the floor of the output-size formula (lesson 3) "
                                       "drops pixel 27"),
        Claim("fastnet_seen", [0, 27], "gets no gradient from row 27"),
        Claim("fields_agree", True),
        Claim("one_by_one_diff", Below(1e-5)),
        Claim("bottleneck", [256, 64, 256], "squeeze 256 channels to 64 before their 3x3 convolution and expand them "
                                            "back to 256"),
        Claim("squeeze_params", [16448, 147520], "256 x 64 + 64 = 16,448 parameters; a 3x3 one would have 147,520"),
        Claim("bn_train_diff", Below(1e-5), "within 1e-5"),
        Claim("out_means", lambda v, _: all(abs(a - b) < 1e-4 for a, b in zip(v, [0, 1, -1, 3])), "the mean beta"),
        Claim("out_stds", lambda v, _: all(abs(a - b) < 1e-3 for a, b in zip(v, [1, 2, 0.5, 1])),
              "the standard deviation gamma"),
        Claim("running_diff", Below(1e-5)),
        Claim("bn_eval_diff", Below(1e-5)),
        Claim("train_eval_gap", Rounds(12.22, 2), "by up to 12.22"),
        Claim("plain_acc", Below(0.2), "below 20% of the test digits right"),
        Claim("bn_acc", Range(0.90, 0.99), "90-99%"),
        Claim("plain_shrink", Rounds(0.1, 1), "about a tenth of the first layer's"),
        Claim("spreads", lambda v, _: max(v[1]) - min(v[1]) < 0.1 and max(v[0]) > 5 * min(v[0]),
              "keeps the same spread"),
        Claim("mlp_shift3", Range(0.35, 0.65), "the MLP is down to 35-65%"),
        Claim("lenet_shift3", Range(0.80, 0.95), "LeNet keeps 80-95%"),
        Claim("fastnet_shift3", Range(0.94, 0.99), "fastnet 94-99%"),
        Claim("equivariance_diff", Below(1e-5)),
    ],
    8: [
        Claim("channel_parts", [2.0, -2.0, -3.0], "are 2, -2 and -3, so Y[0, 0] = 2 - 2 - 3 = -3"),
        Claim("colour_y00", -3.0),
        Claim("gray_diff", Below(1e-5)),
        Claim("cifar_sizes", [28, 14, 10, 5], "32 -> 28 -> 14 -> 10 -> 5, so 16 x 5 x 5 = 400"),
        Claim("cifar_fc1", 48120, "400 x 120 + 120 = 48,120"),
        Claim("cifar_params", 62006, "62,006 parameters"),
        Claim("hue_luma", Below(1e-6)),
        Claim("colour_acc", Range(0.97, 1.0), "97-100%"),
        Claim("gray_acc", Range(0.25, 0.40), "in gray, 25-40%"),
        Claim("gray_shape", Above(0.97), "more than 97%"),
        Claim("gray_colour", Range(0.25, 0.40), "the colour in 25-40%"),
        Claim("chance", Rounds(0.33, 2), "gets 33%"),
        Claim("vgg_convs", 13),
        Claim("vgg_params", Rounds(138, 0, 1e-6), "138 million parameters"),
        Claim("vgg_dense_share", Rounds(0.89, 2), "89% of them in the three dense layers"),
        Claim("vgg_fc1_inputs", 25088, "512 x 7 x 7 = 25,088"),
        Claim("lite_params", Rounds(4.7, 1, 1e-6), "4.7 million parameters with the same 1000-class head"),
        Claim("mac_ratio", Rounds(40, -1), "40 times fewer multiply-adds"),
    ],
}


@pytest.fixture(scope="session")
def executed(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Callable[[int], Any]:
    """Each lesson executed at most once per session, in a fresh kernel, its copy kept for the site build."""
    out = tmp_path_factory.mktemp("executed") / "lessons"  # the site build takes this folder as docs/lessons
    # An empty torch cache: nothing is downloaded (lesson 6's ImageNet weights come installed, cnnlab[pretrained]).
    env = {"CNNLAB_DATA": str(data_dir), "TORCH_HOME": str(tmp_path_factory.mktemp("torch-home"))}
    done: dict[int, Any] = {}

    def run(number: int) -> Any:
        if number not in done:
            names = [c.name for c in CLAIMS[number]]
            done[number] = execute.execute(execute.lesson_path(number), out, probe=names, env=env)
            print(f"lesson {number}: {done[number].seconds:.1f} s")
        return done[number]

    run.out = out
    return run


def lesson_text(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


# ---- every number in the text: read, then claimed, quoted or given (the rule is in the module's docstring)

NUMBER = re.compile(
    r"(?<![\w.])(?<![A-Za-z]-)"  # not part of a name (CIFAR-10, VGG16, EfficientNet-B0) or of a longer number
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:e-?\d+)?)"
    r"(?P<upper>-\d+(?:\.\d+)?)?"  # the upper end of a range, 97-98.5%
    r"(?P<unit>%| million\b|M\b)?")
QUOTED = re.compile(r'<span class="quoted" title="(?P<title>[^"]*)">(?P<text>.*?)</span>', re.S)


class Stated(NamedTuple):
    """A number as the text writes it, where it is, and the sentence around it."""

    text: str
    value: float
    percent: bool
    start: int
    end: int
    context: str


def markdown_of(path: Path) -> str:
    return "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


def prose(markdown: str) -> str:
    """The markdown with what is not prose blanked out, positions kept: headings, code blocks and spans, link
    targets, HTML tags, and the Exercises and Sources sections."""
    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    text = re.sub(r"(?ms)^## (Exercises|Sources)\b.*?(?=^# |\Z)", blank, markdown)
    text = re.sub(r"(?ms)^```.*?^```", blank, text)
    text = re.sub(r"(?m)^(#.*|    .*)$", blank, text)
    text = re.sub(r"`[^`\n]*`", blank, text)
    text = re.sub(r"\]\([^)\n]*\)", blank, text)
    return re.sub(r"<[^>\n]*>", blank, text)


def stated_numbers(markdown: str) -> list[Stated]:
    """Every number of the prose, in order."""
    found, text = [], prose(markdown)
    for m in NUMBER.finditer(text):
        start = max(text.rfind(". ", 0, m.start()) + 2, text.rfind("\n\n", 0, m.start()) + 2)
        stops = [x for x in (text.find(". ", m.end()), text.find("\n\n", m.end())) if x >= 0]
        context = " ".join(markdown[start:min(stops, default=len(text))].split())
        found.append(Stated(m.group(0), said_value(m), m.group("unit") == "%", m.start(), m.end(), context))
    return found


def said_value(m: re.Match) -> float:
    value = float(m.group("num").replace(",", ""))
    return value * {" million": 1e6, "M": 1e6, "%": 0.01}.get(m.group("unit") or "", 1)


WORD_NUMBERS = {"half": 0.5, "a third": 1 / 3, "a quarter": 0.25, "a tenth": 0.1}


def said_numbers(words: str) -> list[float]:
    """The numbers in a claim's words as values: '97-98.5%' -> [0.97, 0.985], '4.7 million' -> [4.7e6], 'more than
    half' -> [0.5]."""
    values = [v for w, v in WORD_NUMBERS.items() if re.search(rf"\b{w}\b", words)]
    for m in NUMBER.finditer(words):
        values.append(said_value(m))
        if m.group("upper"):
            upper = float(m.group("upper")[1:])
            values.append(upper / 100 if m.group("unit") == "%" else upper)
    return values


def code_literals(path: Path) -> set[float]:
    """The numbers a lesson's code types in (12_000, 1e-3, 0.3 ...): number tokens, not comments or strings."""
    values = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NUMBER:
                values.add(float(token.string.replace("_", "")))
    return values


def word_pattern(words: str) -> str:
    """The words as a pattern that allows any line break or run of spaces between them."""
    return r"\s+".join(re.escape(w) for w in words.split())


def spans(markdown: str, words: list[str]) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for w in words for m in re.finditer(word_pattern(w), markdown)]


def unchecked_numbers(number: int) -> list[str]:
    """The numbers of lesson `number`'s text that are neither claimed, quoted nor given, as 'NUMBER in: sentence'."""
    path = execute.lesson_path(number)
    markdown = markdown_of(path)
    claimed = spans(markdown, [c.said for c in CLAIMS[number] if c.said])
    quoted = [(m.start("text"), m.end("text")) for m in QUOTED.finditer(markdown) if m.group("title").strip()]
    given = code_literals(path)
    wrong = []
    for n in stated_numbers(markdown):
        inside = any(a <= n.start and n.end <= b for a, b in claimed + quoted)
        digit = re.fullmatch(r"\d", n.text) is not None
        typed = not n.percent and n.value in given
        if not (inside or digit or typed):
            wrong.append(f"{n.text!r} in: {n.context}")
    return wrong


@pytest.mark.parametrize("number", LESSON_NUMBERS)
def test_every_number_in_the_text_is_checked_or_quoted(number: int) -> None:
    wrong = unchecked_numbers(number)
    assert not wrong, (f"lesson {number} states numbers that no claim checks and no quoted marker explains "
                       "(see this file's docstring):\n" + "\n".join(wrong))


@pytest.mark.parametrize("number", LESSON_NUMBERS)
def test_a_claims_words_state_its_bounds(number: int) -> None:
    """A range or a bound a claim checks is the one its words state: the text and the check cannot drift apart."""
    wrong = []
    for claim in CLAIMS[number]:
        if isinstance(claim.expected, STATED) and claim.said:
            stated = said_numbers(claim.said)
            missing = [b for b in claim.expected.bounds() if not any(math.isclose(b, v, rel_tol=1e-9) for v in stated)]
            if missing:
                wrong.append(f"{claim.name}: checks {claim.expected} but its words {claim.said!r} say {stated}")
    assert not wrong, "\n".join(wrong)


def test_the_number_rule_catches_what_it_should() -> None:
    """The rule on made-up text: a bare figure fails; claimed, quoted, given and single-digit ones pass."""
    text = ("It reaches 97.5% in 3 epochs. The layer has 1,234 weights. "
            '<span class="quoted" title="a paper">4.7 million</span> photos; batches of 64. '
            "CIFAR-10 and VGG16 are names. `lr=0.25` is code.\n\n## Exercises\n\n1. Try 500 images.")
    numbers = [(n.text, n.value) for n in stated_numbers(text)]
    assert numbers == [("97.5%", 0.975), ("3", 3.0), ("1,234", 1234.0), ("4.7 million", 4.7e6), ("64", 64.0)]
    assert said_numbers("about 97-98.5% of 10,000") == [0.97, 0.985, 10000.0]
    quoted = [(m.start("text"), m.end("text")) for m in QUOTED.finditer(text)]
    assert [n.text for n in stated_numbers(text) if any(a <= n.start and n.end <= b for a, b in quoted)] == [
        "4.7 million"]
    assert spans("the  splits are\n55,000 / 5,000", ["splits are 55,000"]) == [(5, 22)]
    assert said_numbers("more than half, about a tenth") == [0.5, 0.1]


def test_lessons_numbered_in_order() -> None:
    paths = execute.lesson_paths()
    assert [int(p.name[:2]) for p in paths] == LESSON_NUMBERS, paths
    assert sorted(CLAIMS) == LESSON_NUMBERS


@pytest.mark.parametrize("path", execute.lesson_paths(), ids=lambda p: p.name[:2])
def test_lesson_is_committed_clean_and_complete(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit lessons without outputs"
    assert nb.metadata.kernelspec.name == "python3"
    first = nb.cells[0].source
    assert first.startswith(f"# {int(path.name[:2])}. ") and "**You will be able to**" in first
    text = lesson_text(path)
    exercises = text.split("## Exercises", 1)[1].split("##", 1)[0]
    numbered = [line for line in exercises.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert 2 <= len(numbered) <= 4, numbered
    solutions = [c for c in code if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == 1 and solutions[0].metadata["jupyter"]["source_hidden"] is True
    assert "## Sources" in text
    markdown = markdown_of(path)
    for claim in CLAIMS[int(path.name[:2])]:  # the lesson states each checked number in its own words
        assert claim.said is None or spans(markdown, [claim.said]), f"{path.name} no longer says {claim.said!r}"
    for m in QUOTED.finditer(markdown):
        assert m.group("title").strip(), f"{path.name}: a quoted figure must say where it is from: {m.group(0)}"


def check_claim(claim: Claim, values: dict[str, Any]) -> bool:
    value = values[claim.name]
    if isinstance(claim.expected, STATED):
        return claim.expected.check(value)
    if callable(claim.expected):
        return claim.expected(value, values)
    if isinstance(claim.expected, float):
        return math.isclose(value, claim.expected, abs_tol=0.0)
    return value == claim.expected


@pytest.mark.slow
@pytest.mark.parametrize("number", LESSON_NUMBERS)
def test_lesson_runs_and_keeps_its_promises(number: int, executed) -> None:
    result = executed(number)
    values = result.values
    wrong = [f"{c.name} = {values[c.name]!r}, lesson promises {c.expected!r} ({c.said!r})"
             for c in CLAIMS[number] if not check_claim(c, values)]
    assert not wrong, "\n".join(wrong)
    nb = nbformat.read(result.path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "every lesson shows pictures"
    # A widget is kept as its static frame: no live widget view, no widget state (it would need scripts from a CDN).
    assert not [o for o in outputs if execute.WIDGET_VIEW in o.get("data", {})] and "widgets" not in nb.metadata
    for cell in nb.cells:
        if cell.cell_type == "code" and "_widget(" in cell.source and not cell.metadata.get("tags"):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"no static frame: {cell.source}"


def test_an_executed_copy_keeps_a_widgets_static_frame_only() -> None:
    """A widget's live view needs its kernel (and its scripts from a CDN): the copy keeps the PNG it displays with."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("output_size_widget()")])
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
        execute.WIDGET_VIEW: view, "image/png": "iVBORw0KGgo=", "text/plain": "n = 6, k = 3"})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    execute.static_widgets(nb)
    assert set(nb.cells[0].outputs[0].data) == {"image/png", "text/plain"} and "widgets" not in nb.metadata
    nbformat.validate(nb)


def test_cnnlab_lessons_lists_them_in_order(capsys: pytest.CaptureFixture) -> None:
    assert main(["lessons"]) == 0
    out = capsys.readouterr().out
    assert "1. Images are tensors" in out and "7. Why convolutions work" in out and "8. Colour images" in out
    assert main(["lessons", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["number"] for x in listed] == LESSON_NUMBERS and all(x["summary"] for x in listed)


def test_open_copies_a_lesson_and_keeps_a_changed_copy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "course"
    assert main(["lessons", "open", "2", str(folder), "--no-start"]) == 0
    copy = folder / execute.lesson_path(2).name
    assert copy.read_bytes() == execute.lesson_path(2).read_bytes()
    assert "jupyter lab 02-" in capsys.readouterr().out
    copy.write_text(copy.read_text().replace("Cross-correlation", "My notes on cross-correlation"))
    mine = copy.read_bytes()
    assert main(["lessons", "open", "2", str(folder), "--no-start"]) == 0
    assert copy.read_bytes() == mine and "kept your copy" in capsys.readouterr().out


def test_open_starts_jupyter_in_the_lesson_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "jupyter-lab"
    fake.parent.mkdir()
    record = tmp_path / "started.txt"
    fake.write_text(f"#!/bin/sh\necho \"$(pwd -P) $@\" > {record}\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))  # Jupyter is looked for beside it
    assert cli_lessons.find_jupyter() == [str(fake)]
    assert main(["lessons", "open", "1", str(tmp_path / "course")]) == 3  # Jupyter's own exit code
    assert record.read_text().split() == [str((tmp_path / "course").resolve()), execute.lesson_path(1).name]


def test_open_without_jupyter_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(cli_lessons, "find_jupyter", lambda: None)
    assert main(["lessons", "open", "6", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert cli_lessons.INSTALL_HINT in out and (tmp_path / execute.lesson_path(6).name).is_file()


def test_open_refuses_a_missing_lesson_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["lessons", "open", "9", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: there is no lesson 9: choose 1-8") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_docs_site_builds_strict_from_the_executed_lessons(executed, tmp_path: Path) -> None:
    for number in LESSON_NUMBERS:
        executed(number)
    site = tmp_path / "site"
    env = {**os.environ, "CNNLAB_EXECUTED_LESSONS": str(executed.out)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lesson2 = (site / "lessons" / "02-cross-correlation-by-hand" / "index.html").read_text()
    assert "tensor([[19., 25.]," in lesson2  # outputs as the lesson printed them
    assert '<details class="solution">' in lesson2
    for page, call in (("02-cross-correlation-by-hand", "sliding_window_widget"),
                       ("03-padding-stride-channels-pooling", "output_size_widget"),
                       ("04-conv-relu-pool-on-a-photo", "feature_map_widget")):
        html = (site / "lessons" / page / "index.html").read_text()
        after = html.rsplit(call, 1)[1]  # the widget's cell (after the import), its output up to the next input
        assert 'src="data:image/png;base64,' in after.split('class="jp-InputArea', 1)[0], page
        assert "widget-view" not in html and "jupyter-widgets" not in html, page
    lesson5 = (site / "lessons" / "05-lenet-and-a-real-training-run" / "index.html").read_text()
    assert '<span class="quoted" title="the README' in lesson5  # a quoted figure keeps its marker and its source
    assert (site / "lessons" / "08-colour-images" / "index.html").is_file()
    cli = (site / "cli" / "index.html").read_text()
    for command in ("cnnlab train", "cnnlab lessons open", "cnnlab conv-size", "--recipe"):
        assert command in cli
    assert "train_one_epoch" in (site / "api" / "training" / "index.html").read_text()
    assert "fast-mnist" in (site / "recipes" / "index.html").read_text()
    assert (site / "ARCHITECTURE" / "index.html").is_file()
    pages = list(site.rglob("*.html"))
    assert not [p for p in pages if 'src="http' in p.read_text()], "the site must work offline"
    for page in ("getting-started", "howto/own-images", "reference/config", "reference/rest-api",
                 "reference/file-formats", "troubleshooting", "changelog"):
        html = (site / page / "index.html").read_text()
        assert "<!-- generated:" not in html, page  # every generated part filled in
    assert "--augment-on-overfit" in (site / "reference" / "config" / "index.html").read_text()
    check_site_in_browser(site)  # tests/test_site.py: offline, no script error, a desktop's and a phone's size


# ---- the API the lessons needed (findings fixed for them)


def test_a_run_is_evaluated_and_drawn_from_the_public_api(digits_run: Path) -> None:
    import cnnlab
    from cnnlab.training import EvalResult, evaluate_run

    result = evaluate_run(cnnlab.load_run(digits_run))
    assert isinstance(result, EvalResult) and result.report.accuracy == pytest.approx(
        json.loads((digits_run / "results.json").read_text())["test_acc"], abs=1e-9)
    confusion, mistakes = result.confusion_figure(), result.mistakes_figure(6)
    assert confusion.axes and len([a for a in mistakes.axes if a.images]) == 6
    assert result.mistakes_figure(0) is None


def test_a_summary_shows_as_its_table_in_jupyter() -> None:
    from IPython.lib.pretty import pretty

    import cnnlab

    table = cnnlab.summary(cnnlab.get_model("lenet"), (1, 28, 28))
    assert pretty(table) == str(table) and "conv1" in pretty(table)


def test_a_folder_dataset_sees_images_added_in_the_same_process(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from cnnlab.data import get_dataset

    def add(cls: str, n: int) -> None:
        (tmp_path / cls).mkdir(exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{cls}{i}.png")

    add("a", 5)
    add("b", 5)
    assert get_dataset(f"folder:{tmp_path}", "train", val_size=0).classes == ("a", "b")
    add("c", 5)  # lesson 6 adds a class to its folder and trains again, in the same kernel
    data = get_dataset(f"folder:{tmp_path}", "train", val_size=0)
    assert data.classes == ("a", "b", "c") and sum(data.info.counts.values()) == 15
