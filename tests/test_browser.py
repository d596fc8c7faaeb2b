"""The web page in a real browser: Playwright driving Chromium, headless, against a real uvicorn server.

Chromium is required, never skipped; it is found wherever it is ($CHROMIUM, the PATH, Playwright's own browsers).
scripts/test (the README's test command) installs Debian's chromium where none is found.
Screenshots of each step go to test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from cnnlab.apps.serve import create_app
from cnnlab.apps.serve.server import BackgroundServer

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
TIMEOUT_MS = 30_000  # a loaded 2-core machine: waits are generous, and end as soon as the element is there

pytestmark = pytest.mark.slow  # a real browser and a real server: the slow tier


@pytest.fixture(scope="module")
def server(digits_run: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(digits_run)) as srv:
        yield srv


def find_chromium(bundled: str | None = None) -> str | None:
    """A Chromium to drive: $CHROMIUM, else the first of CHROMIUM_NAMES on the PATH, else Playwright's own download."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    found = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    return found or (bundled if bundled and Path(bundled).is_file() else None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        path = find_chromium(pw.chromium.executable_path)
        if path is None:
            pytest.fail(f"no Chromium found ($CHROMIUM, {', '.join(CHROMIUM_NAMES)} on the PATH, or Playwright's "
                        f"browsers): run scripts/test, which installs Debian's chromium, or `apt-get install "
                        f"chromium`", pytrace=False)
        b = pw.chromium.launch(executable_path=path, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page_errors() -> list[str]:
    """JavaScript errors and failed loads of the test's page; a test expecting one removes it."""
    return []


@pytest.fixture
def page(browser, server: BackgroundServer, page_errors: list[str], request):
    """A fresh page on the app, ready; fails the test on any JavaScript error or failed request."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors = page_errors
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    pg.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    pg.goto(server.url + "/", wait_until="networkidle")
    pg.wait_for_selector("body[data-ready=true]")
    yield pg
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    assert not errors, errors


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def digit_file(tmp_path: Path, index: int) -> tuple[Path, int]:
    """A test-split digit, scaled from 8x8 to 112x112 like a photo of one, and its label."""
    from cnnlab.data.registry import get_dataset

    data = get_dataset("digits", "test")
    path = tmp_path / f"digit-{index}.png"
    Image.fromarray(data.images[index][0].numpy()).resize((112, 112), Image.Resampling.NEAREST).save(path)
    return path, int(data.targets[index])


BARS_JS = "() => JSON.stringify([...document.querySelectorAll('#bars li')].map(li => li.dataset.probability))"


def bars(page) -> list[tuple[str, float]]:
    return [(li.get_attribute("data-class"), float(li.get_attribute("data-probability")))
            for li in page.locator("#bars li").all()]


def test_upload_a_digit_and_see_its_class_on_top(page, tmp_path: Path) -> None:
    line = page.inner_text("#model-line")
    assert "lenet" in line  # its test set is small: the accuracy comes with its interval
    assert re.search(r"test accuracy [\d.]+% \(95% interval [\d.]+% to [\d.]+%, \d+ test images\)", line)
    assert page.is_visible("#canvas")  # a 1x28x28 model: drawing is offered
    for index in (0, 1, 2):
        path, label = digit_file(tmp_path, index)
        page.set_input_files("#file", str(path))
        page.wait_for_selector(f"#top-line[data-source='{path.name}']")
        shot(page, f"upload-digit-{index}")
        top = bars(page)
        assert top[0][0] == str(label), (index, top)
        assert page.get_attribute("#top-line", "data-class") == str(label)
        assert len(top) == 10 and abs(sum(p for _, p in top) - 1) < 1e-3
    seen = page.locator("#seen")
    assert seen.get_attribute("src").startswith("data:image/png;base64,")
    assert seen.evaluate("img => img.naturalWidth") == 224  # 28 pixels, each an 8x8 block


def test_a_dark_on_white_digit_is_inverted_and_a_photo_gets_a_note(page, tmp_path: Path, photos_dir: Path) -> None:
    path, label = digit_file(tmp_path, 3)
    dark = tmp_path / "dark-on-white.png"
    Image.eval(Image.open(path), lambda v: 255 - v).save(dark)
    page.set_input_files("#file", str(dark))
    page.wait_for_selector(f"#top-line[data-source='{dark.name}']")
    page.wait_for_selector("#input-notes[data-inverted=true]")
    assert "Inverted" in page.inner_text("#input-notes") and bars(page)[0][0] == str(label)
    shot(page, "dark-digit-inverted")
    page.uncheck("#invert")  # the same image again, as sent
    page.wait_for_selector("#input-notes[data-inverted=false]")
    assert "Inverted" not in page.inner_text("#input-notes")
    page.check("#invert")
    page.set_input_files("#file", str(photos_dir / "chelsea.png"))
    page.wait_for_selector("#top-line[data-source='chelsea.png']")
    assert "a colour image, but the model was trained on gray images" in page.inner_text("#input-notes")
    shot(page, "photo-note")


def test_draw_on_the_canvas_and_the_bars_change(page) -> None:
    draw_seven(page)
    page.wait_for_selector("#top-line[data-source=drawing]")
    first, first_text = bars(page), page.evaluate(BARS_JS)
    shot(page, "draw-seven")
    assert len(first) == 10
    # A second stroke changes the drawing; live predictions follow it.
    box = page.locator("#canvas").bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 60, y0 + 150)
    page.mouse.down()
    for x in range(60, 231, 10):
        page.mouse.move(x0 + x, y0 + 150)
    page.mouse.up()
    page.wait_for_function(f"b => ({BARS_JS})() !== b", arg=first_text)
    second = bars(page)
    shot(page, "draw-seven-crossed")
    assert second != first
    seen = page.get_attribute("#seen", "src")
    page.click("#clear")
    assert page.inner_text("#top-line") == "No image yet." and page.locator("#bars li").count() == 0
    assert seen.startswith("data:image/png;base64,")


def test_feature_maps_layer_picker_and_gradcam(page, tmp_path: Path) -> None:
    path, _ = digit_file(tmp_path, 3)
    page.set_input_files("#file", str(path))
    page.wait_for_selector(f"#top-line[data-source='{path.name}']")
    page.click("#inside-details summary")
    page.wait_for_selector("#fmaps[data-layer=conv1] img")
    assert page.locator("#fmaps img").count() == 6  # conv1 has 6 channels
    options = page.locator("#layer option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]
    page.select_option("#layer", "conv2")
    page.wait_for_selector("#fmaps[data-layer=conv2]")
    assert page.locator("#fmaps img").count() == 16
    assert page.locator("#fmaps img").first.evaluate("img => img.naturalWidth") == 10  # conv2 maps are 10x10
    assert "conv2: 16 maps of 10x10" in page.inner_text("#fmap-caption")
    page.wait_for_selector("#gradcam:not([hidden])")
    assert "Grad-CAM at pool2" in page.inner_text("#gradcam-caption")
    shot(page, "feature-maps-conv2")


def test_edit_a_kernel_and_the_output_changes(page, page_errors: list[str]) -> None:
    page.wait_for_selector("#conv-out[src^='data:image/png']")
    page.locator("#playground").scroll_into_view_if_needed()
    assert page.input_value("#preset") == "sobel_x"
    before = page.get_attribute("#conv-out", "src")
    assert "output: 169 x 254" in page.inner_text("#conv-size")
    shot(page, "kernel-before")
    page.fill("#k-1-1", "4")  # the centre weight of Sobel-x: now an edge detector on top of the picture
    page.wait_for_function("s => document.getElementById('conv-out').src !== s", arg=before)
    assert page.input_value("#preset") == ""  # an edited kernel is a custom one
    shot(page, "kernel-edited")
    page.fill("#stride", "2")
    page.dispatch_event("#stride", "change")
    page.wait_for_function("() => document.getElementById('conv-size').textContent.includes('output: 85 x 127')")
    # Click an output pixel: its multiply-and-sum appears.
    img = page.locator("#conv-out")
    size = img.bounding_box()
    img.click(position={"x": size["width"] / 2, "y": size["height"] / 2})
    page.wait_for_selector("#pixel-out pre")
    text = page.inner_text("#pixel-out pre")
    assert text.startswith(f"out[{page.input_value('#pix-i')}, {page.input_value('#pix-j')}] = sum(Xpad[")
    assert "*4" in text  # the edited centre weight is in the sum
    assert page.is_visible("#win-box")
    shot(page, "kernel-pixel-sum")
    page.fill("#k-0-0", "")  # an empty weight: the server's 422 message is shown, the page keeps working
    page.wait_for_function("() => document.getElementById('conv-status').textContent.includes('422')")
    assert "kernel[1][1]" in page.inner_text("#conv-status")
    assert page.get_attribute("#k-0-0", "aria-invalid") == "true"
    assert len(page_errors) == 1 and "422" in page_errors[0]  # the browser logs the refused request
    page_errors.clear()


def test_a_model_without_28x28_gray_input_hides_the_canvas(browser, server: BackgroundServer) -> None:
    pg = browser.new_page()
    pg.set_default_timeout(TIMEOUT_MS)

    def rgb_model(route) -> None:
        info = json.loads(route.fetch().text())
        route.fulfill(json={**info, "input_size": [3, 32, 32], "dataset": "cifar10"})

    pg.route("**/api/model", rgb_model)
    pg.goto(server.url + "/")
    pg.wait_for_selector("body[data-ready=true]")
    assert not pg.is_visible("#canvas") and pg.is_visible("#drop")
    assert "input 3x32x32" in pg.inner_text("#model-line")
    pg.close()


def test_keyboard_reaches_every_control(page) -> None:
    """Upload, the overview's controls, layer picker, kernel cells and buttons are native controls with labels, in tab
    order."""
    for selector in ("#file", "#ov-channels", "#ov-row", "#ov-col", "#ov-go", "#layer", "#preset", "#ksize", "#k-0-0",
                     "#stride", "#padding", "#mode", "#photo", "#pix-i", "#pix-j", "#pix-go", "#clear"):
        node = page.locator(selector)
        label = node.evaluate("n => n.labels && n.labels.length ? n.labels[0].textContent : "
                              "(n.getAttribute('aria-label') || n.textContent)")
        assert label.strip(), f"{selector} has no label"
        assert node.evaluate("n => n.tabIndex") >= 0, f"{selector} is not reachable with Tab"
    page.focus("#k-1-1")
    before = page.get_attribute("#conv-out", "src")
    page.keyboard.press("ArrowUp")  # a number input steps by keyboard: the output follows
    page.wait_for_function("s => document.getElementById('conv-out').src !== s", arg=before)


def test_api_docs_render_offline(browser, server: BackgroundServer) -> None:
    """Swagger UI at /docs comes from the package, not a CDN: it renders with the network closed."""
    context = browser.new_context()
    pg = context.new_page()
    outside: list[str] = []
    pg.on("request", lambda req: outside.append(req.url) if not req.url.startswith(server.url) else None)
    pg.goto(server.url + "/docs", wait_until="networkidle")
    pg.wait_for_selector("#swagger-ui .information-container", timeout=TIMEOUT_MS)
    assert "cnnlab" in pg.inner_text("#swagger-ui .information-container")
    assert pg.locator("#swagger-ui .opblock").count() >= 5  # one block per endpoint
    pg.screenshot(path=str(ARTIFACTS / "api-docs.png"))
    context.close()
    assert not outside, outside


# ---------------------------------------------------------------- the network at a glance


def draw_seven(page) -> None:
    """A "7" on the canvas: a bar across the top, then a stroke down to the lower left."""
    box = page.locator("#canvas").bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 70, y0 + 60)
    page.mouse.down()
    for x in range(70, 211, 10):
        page.mouse.move(x0 + x, y0 + 60)
    for step in range(1, 16):
        page.mouse.move(x0 + 210 - step * 6, y0 + 60 + step * 12)
    page.mouse.up()


def overview_columns(page) -> list[str]:
    page.wait_for_selector("#ov-net .ov-col[data-layer] button.ov-map")
    return page.locator("#ov-net .ov-col").evaluate_all("cs => cs.map(c => c.dataset.layer || 'output')")


def click_map(page, layer: str, channel: int, fx: float, fy: float) -> dict:
    """Click a map at a fraction of its width and height; the /api/neuron reply the page got."""
    crop = page.locator(f'#ov-net button.ov-map[data-layer="{layer}"][data-channel="{channel}"] .crop')
    crop.scroll_into_view_if_needed()
    box = crop.bounding_box()
    with page.expect_response(lambda r: "/api/neuron" in r.url) as reply:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_selector(f'#ov-work[data-layer="{layer}"]')
    return reply.value.json()


def sent_image(page) -> bytes:
    """The image the page sends (the cropped drawing, or the upload), as bytes."""
    return bytes(page.evaluate("async () => Array.from(new Uint8Array(await state.image.arrayBuffer()))"))


def test_draw_a_digit_see_the_whole_network_and_a_conv_value_worked_out(page, digits_run: Path) -> None:
    import torch
    import torch.nn.functional as F

    from cnnlab.training.run import load_run

    draw_seven(page)
    page.wait_for_selector("#top-line[data-source=drawing]")
    assert overview_columns(page) == ["input", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "output"]
    # Right after the prediction, in the open: the section after the classifier, in no collapsed <details>.
    assert page.evaluate("() => document.getElementById('classify').nextElementSibling.id") == "overview"
    assert page.evaluate("() => document.getElementById('overview').closest('details') === null")
    assert page.locator("#ov-net .ov-col[data-layer=conv2] button.ov-map").count() == 8  # first 8 of 16
    assert page.locator("#ov-net .ov-col[data-layer] .legend .bar").count() == 7  # one scale per layer and input
    page.hover('#ov-net button.ov-map[data-layer="conv1"][data-channel="2"]')
    assert re.match(r"conv1 \(Conv2d\), channel 2: 28x28, values -?[\d.]+ to -?[\d.]+",
                    page.inner_text("#ov-hover"))
    shot(page, "overview-digit")
    r = click_map(page, "conv1", 2, 14.5 / 28, 7.5 / 28)  # the centre of the value at row 7, column 14
    assert (r["row"], r["col"], r["kind"]) == (7, 14, "conv") and r["agrees"]
    assert page.input_value("#ov-row") == "7" and page.input_value("#ov-col") == "14"
    text = page.inner_text("#ov-work")
    assert "sum of all 25 products" in text and "\u2713 the same" in text and "relu1 (ReLU)" in text
    # The value shown is torch's own convolution of the image the page sent, at that position.
    run = load_run(digits_run)
    x, _ = run.prepare_checked(sent_image(page), True)
    conv = run.model.conv1
    with torch.no_grad():
        ref = float(F.conv2d(x, conv.weight, conv.bias, padding=2)[0, 2, 7, 14])
    assert r["sum"] == pytest.approx(ref, rel=1e-4, abs=1e-6) and r["value"] == pytest.approx(ref, abs=1e-6)
    shown = re.search(r"sum = (-?[\d.e-]+); the forward pass gave (-?[\d.e-]+)", text)
    assert float(shown[1]) == pytest.approx(r["sum"], rel=1e-5, abs=1e-7)
    shot(page, "overview-digit-conv-value")
    # conv2 reads all 6 maps of pool1: three drawn as tables, the others as sums until asked for.
    r = click_map(page, "conv2", 4, 0.5, 0.5)
    assert r["agrees"] and len(r["patch"]) == 6 and page.locator("#ov-work .channel-work").count() == 3
    page.locator("#ov-work button.more").click()
    assert page.locator("#ov-work .channel-work").count() == 6
    # A pool value: its window, the kept value marked.
    r = click_map(page, "pool2", 0, 0.1, 0.1)
    assert r["kind"] == "pool" and r["agrees"] and page.locator("#ov-work td.kept").count() == 1
    # The output: the winning class's score from the last linear layer, its largest contributions, the softmax.
    top = page.get_attribute("#top-line", "data-class")
    page.locator("#ov-net .ov-class.top").click()
    page.wait_for_selector("#ov-work[data-kind=dense]")
    text = page.inner_text("#ov-work")
    assert f"fc2, output {top} (class {top})" in text and "The 10 largest products" in text
    assert "the softmax" in text and text.count("\u2713 the same") == 2
    shot(page, "overview-digit-softmax")


@pytest.fixture(scope="module")
def photo_server(lite0_run: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(lite0_run)) as srv:
        yield srv


@pytest.fixture
def photo_page(browser, photo_server: BackgroundServer, page_errors: list[str], request):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.on("pageerror", lambda exc: page_errors.append(f"page error: {exc}"))
    pg.on("console", lambda msg: page_errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    pg.goto(photo_server.url + "/", wait_until="networkidle")
    pg.wait_for_selector("body[data-ready=true]")
    yield pg
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    assert not page_errors, page_errors


def test_the_same_on_a_photo_model_with_its_blocks_folded(photo_page, photos_dir: Path) -> None:
    page = photo_page
    assert "efficientnet_lite0" in page.inner_text("#model-line") and not page.is_visible("#canvas")
    page.set_input_files("#file", str(photos_dir / "chelsea.png"))
    columns = overview_columns(page)
    assert columns[:3] == ["input", "conv_stem", "bn1.act"] and columns[-1] == "output"
    # 83 layers: each block folded into its output, a button unfolds it.
    assert page.get_attribute("#ov-net", "data-layers") == "83" and len(columns) < 30
    toggle = page.locator('#ov-net [data-group="blocks.1.0"] .group-toggle')
    assert toggle.get_attribute("aria-expanded") == "false"
    shot(page, "overview-photo")
    toggle.click()
    page.wait_for_selector('#ov-net .ov-col[data-layer="blocks.1.0.conv_dw"]')
    assert page.locator('#ov-net [data-group="blocks.1.0"] .ov-col').count() == 5
    r = click_map(page, "conv_stem", 1, 0.4, 0.6)
    assert r["agrees"] and len(r["patch"]) == 3  # red, green and blue under the kernel
    text = page.inner_text("#ov-work")
    assert "input channel 2: patch" in text and "\u2713 the same" in text and "bn1.act (ReLU6)" in text
    shot(page, "overview-photo-conv-value")
    r = click_map(page, "blocks.1.0.conv_dw", 5, 0.0, 0.0)  # depthwise, stride 2, TensorFlow's "same"
    assert r["agrees"] and len(r["patch"]) == 1 and "depthwise" in page.inner_text("#ov-work")
    page.locator('#ov-net .ov-col[data-layer="blocks.1.0.conv_dw"] .more').click()
    page.wait_for_function("() => document.querySelectorAll("
                           "'#ov-net .ov-col[data-layer=\"blocks.1.0.conv_dw\"] button.ov-map').length === 96")
    shot(page, "overview-photo-all-maps")


def test_the_overview_by_keyboard_with_alt_text_on_every_map(page, tmp_path: Path) -> None:
    path, _ = digit_file(tmp_path, 5)
    page.set_input_files("#file", str(path))
    overview_columns(page)
    alts = page.locator("#ov-net img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert len(alts) > 40 and all(a.strip() for a in alts)
    assert all(re.match(r"conv2 \(Conv2d\), channel \d+: 10x10, values", a) for a in
               page.locator("#ov-net .ov-col[data-layer=conv2] img").evaluate_all("i => i.map(x => x.alt)"))
    first = page.locator('#ov-net button.ov-map[data-layer="relu1"][data-channel="0"]')
    first.focus()
    assert "relu1 (ReLU), channel 0" in page.inner_text("#ov-hover")  # focus shows what hovering shows
    page.keyboard.press("Tab")  # the next map, reached by Tab
    assert page.evaluate("() => document.activeElement.dataset.channel") == "1"
    page.keyboard.press("Enter")  # its centre value
    page.wait_for_selector("#ov-work[data-layer=relu1][data-kind=act]")
    assert (page.input_value("#ov-row"), page.input_value("#ov-col")) == ("14", "14")
    page.focus("#ov-row")
    page.keyboard.press("Control+a")
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('ov-work').textContent.includes('row 3, column 14')")
    assert "max(x, 0)" in page.inner_text("#ov-work")
    shot(page, "overview-keyboard")


def test_a_phone_sized_window_still_works(browser, server: BackgroundServer, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/", wait_until="networkidle")
    page.wait_for_selector("body[data-ready=true]")
    path, _ = digit_file(tmp_path, 7)
    page.set_input_files("#file", str(path))
    overview_columns(page)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # the page itself never scrolls sideways
    net = page.evaluate("() => [document.getElementById('ov-net').scrollWidth, "
                        "document.getElementById('ov-net').clientWidth]")
    assert net[0] > net[1]  # the network scrolls sideways inside its box
    page.locator('#ov-net button.ov-map[data-layer="conv2"][data-channel="3"]').tap()
    page.wait_for_selector("#ov-work[data-layer=conv2][data-kind=conv]")
    assert "\u2713 the same" in page.inner_text("#ov-work")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "overview-phone.png"), full_page=True)
    context.close()
    assert not errors, errors
