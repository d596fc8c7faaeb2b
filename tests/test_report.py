"""`cnnlab report`: one self-contained HTML file whose every embedded image decodes and shows something."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.apps.report import build_report, render_report
from cnnlab.cli.main import main
from cnnlab.errors import CnnlabError

VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "area", "base", "col", "embed", "track"}


class Page(HTMLParser):
    """Collects images, links, ids and text, and checks that every opened element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.urls: list[str] = []  # every src and href
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        self.urls += [a[k] for k in ("src", "href") if k in a]
        if tag == "img":
            self.images.append(a)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html_text: str) -> Page:
    page = Page()
    page.feed(html_text)
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    return page


def decoded(page: Page) -> dict[str, np.ndarray]:
    """alt -> RGB pixels of every embedded image; each must be a PNG data URI that decodes and is not blank."""
    out = {}
    for im in page.images:
        src = im["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        assert png.format == "PNG" and png.width > 0 and png.height > 0
        pixels = np.asarray(png.convert("RGB")).astype(np.int16)
        assert pixels.std() > 5, f"blank image: {im.get('alt')}"
        assert im.get("alt"), "every image has alt text"
        out.setdefault(im["alt"], pixels)
    return out


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet on 200 digits for 2 epochs, probed every epoch (snapshots 0, 1, 2)."""
    out = tmp_path_factory.mktemp("report") / "lenet-probed"
    cnnlab.train(model="lenet", dataset="digits", epochs=2, subset=200, probe_every=1, seed=0, out=str(out),
                 quiet=True)
    return out


@pytest.mark.slow
def test_report_is_self_contained_and_every_image_decodes(probed_run: Path) -> None:
    path = build_report(probed_run, mistakes=6, feature_images=1)
    assert path == probed_run / "report.html"
    assert not [p for p in probed_run.iterdir() if p.name.startswith(".report.html")]  # no temp file left
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.tags.isdisjoint({"script", "link", "iframe", "object", "embed"})
    assert not [u for u in page.urls if "http://" in u or "https://" in u or u.startswith("//")]
    assert "http://" not in text and "https://" not in text
    # Navigation links all point at sections of this page.
    links = [u for u in page.urls if not u.startswith("data:")]
    assert links and all(u.startswith("#") and u[1:] in page.ids for u in links)
    assert {"setup", "curves", "results", "mistakes", "inside", "probes"} <= page.ids
    images = decoded(page)
    for alt in ("loss and accuracy per epoch", "confusion matrix", "misclassified test images with Grad-CAM",
                "first-layer filters", "feature maps of test image 0", "first-layer filters by epoch",
                "feature maps of conv1 by epoch", "feature maps of pool2 by epoch"):
        assert alt in images, f"missing image: {alt}"
    # The probe strip: filters by epoch, one row per snapshot (0, 1, 2), one column per filter.
    strip = images["first-layer filters by epoch"]
    assert strip.shape[0] == round((3 * 0.8 + 0.6) * 100) and strip.shape[1] == round((6 * 0.8 + 0.9) * 100)
    words = " ".join(page.text)
    results = json.loads((probed_run / "results.json").read_text())
    # The digits' 359 test images: the accuracy with its 95% interval (as results.json stores it).
    low, high = results["test_acc_ci_low"], results["test_acc_ci_high"]
    assert f"{results['test_acc']:.1%} (95% CI {low * 100:.1f}-{high:.1%}, {results['test_images']} images)" in words
    for row in ("epoch 0", "epoch 1", "epoch 2"):
        assert row in words  # the probe predictions table
    assert "lenet on digits" in words and "probe_every" in words


def test_report_of_a_run_without_probes_via_the_cli(digits_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "digits.html"
    assert main(["report", str(digits_run), "--out", str(out), "--mistakes", "4", "--images", "1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = parse(out.read_text(encoding="utf-8"))
    assert "probes" not in page.ids and "mistakes" in page.ids
    images = decoded(page)
    assert "feature maps of test image 0" in images and "feature maps of test image 1" not in images
    gallery = images["misclassified test images with Grad-CAM"]
    assert gallery.shape[1] == round(4 * 2.1 * 100)  # 4 mistakes in one row of 2.1-inch tiles
    # Per-class table: the ten digit classes with their support summing to the test split.
    results = json.loads((digits_run / "results.json").read_text())
    support = sum(c["support"] for c in results["per_class"])
    assert support == int(np.sum(results["confusion_matrix"]))


def test_an_unfinished_run_is_evaluated_now(probed_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "unfinished"
    shutil.copytree(probed_run, copy, ignore=shutil.ignore_patterns("results.json", "probes", "report.html"))
    text = render_report(cnnlab.load_run(copy), mistakes=0, feature_images=0)
    page = parse(text)
    words = " ".join(page.text)
    assert "computed now" in words and "probes" not in page.ids
    expected = json.loads((probed_run / "results.json").read_text())["test_acc"]
    assert f"{expected:.1%} (95% CI" in words  # the same best checkpoint on the same split gives the same accuracy
    decoded(page)


def test_clear_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CnnlabError, match="holds no checkpoint"):
        build_report(tmp_path / "empty-run")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "error: no run at" in capsys.readouterr().err


def test_help_reads_well(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: cnnlab report [-h] [--out FILE]")
    flat = " ".join(text.split())
    assert "opens offline, with no scripts and no network" in flat
    assert "(default: RUN/report.html)" in flat and "--probe-every N" in flat
    assert max(len(line) for line in text.splitlines()) <= 80
