"""The prediction server's API: predict, explain, convolve, the network overview and its worked values, the default
model cache, bad input, size limits, decompression bombs and concurrent requests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cnnlab
from cnnlab.apps.serve import create_app
from cnnlab.apps.serve import state as serve_state
from cnnlab.apps.serve.server import BackgroundServer, free_port
from cnnlab.apps.serve.uploads import BodySizeLimit
from cnnlab.training.run import load_run

with warnings.catch_warnings():
    # Starlette suggests its httpx2 fork for the TestClient; httpx is what the project installs and tests with.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

STATIC = Path(cnnlab.__file__).parent / "apps" / "serve" / "static"


# ---------------------------------------------------------------- helpers


def digits_test(n: int) -> list[tuple[bytes, int]]:
    """The first n images of the bundled digits' test split as 64x64 PNGs (nearest), with their labels."""
    from cnnlab.data.registry import get_dataset

    data = get_dataset("digits", "test")
    out = []
    for i in range(n):
        img = Image.fromarray(data.images[i][0].numpy()).resize((64, 64), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append((buf.getvalue(), int(data.targets[i])))
    return out


def png_bomb(width: int, height: int, color_type: int = 0, bit_depth: int = 1) -> bytes:
    """A valid PNG of compressed zero rows: a few hundred KB on disk, width x height pixels once decoded."""
    channels = {0: 1, 2: 3}[color_type]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte + one row of pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decode_data_url(url: str) -> Image.Image:
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def post_image(client, path: str, data: bytes, **kw):
    return client.post(path, files={"image": ("digit.png", data, "image/png")}, **kw)


@pytest.fixture(scope="module")
def client(digits_run: Path) -> TestClient:
    return TestClient(create_app(digits_run))


@pytest.fixture(scope="module")
def digits() -> list[tuple[bytes, int]]:
    return digits_test(24)


# ---------------------------------------------------------------- the basics


def test_health_model_docs_and_page(client: TestClient, digits_run: Path) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    info = client.get("/api/model").json()
    assert info["name"] == "lenet" and info["dataset"] == "digits"
    assert info["classes"] == [str(i) for i in range(10)] and info["input_size"] == [1, 28, 28]
    results = json.loads((digits_run / "results.json").read_text())
    assert info["test_images"] == results["test_images"] < 1000  # a small test set: its interval goes with it
    low, high = info["test_acc_ci"]
    assert (low, high) == (results["test_acc_ci_low"], results["test_acc_ci_high"]) and low < info["test_acc"] < high
    rows = {r["name"]: r for r in info["summary"]["rows"]}
    assert rows["conv1"]["output_shape"] == [6, 28, 28] and rows["conv1"]["formulas"]  # worked-out sizes
    assert info["summary"]["total_params"] == sum(p.numel() for p in load_run(digits_run).model.parameters())
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/explain", "/api/convolve", "/api/model", "/api/health"} <= set(paths)
    assert "multipart/form-data" in paths["/api/predict"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "http://" not in docs.text and "https://" not in docs.text  # no CDN
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text and 'href="/static/style.css"' in page.text
    assert client.get("/static/app.js").headers["content-type"].split(";")[0] in ("text/javascript",
                                                                                   "application/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_page_needs_no_network() -> None:
    """Offline: no CDN, web font or external script; one HTML file, its scripts and one CSS file."""
    assert sorted(p.name for p in STATIC.iterdir()) == ["app.js", "index.html", "neuron.js", "overview.js",
                                                        "style.css"]
    page = (STATIC / "index.html").read_text()
    assert all(f'<script src="/static/{name}" defer>' in page for name in ("app.js", "overview.js", "neuron.js"))
    for path in STATIC.iterdir():
        text = path.read_text()
        for bad in ("http://", "https://", "//cdn", "@import", "fonts.googleapis"):
            assert bad not in text, f"{path.name} refers to {bad}"


def test_kernels_lists_square_presets(client: TestClient) -> None:
    kernels = {k["name"]: k for k in client.get("/api/kernels").json()}
    assert kernels["sobel_x"]["kernel"] == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    assert len(kernels["gaussian"]["kernel"]) == 5 and "edge" not in kernels  # edge is 1x2
    assert all(len(k["kernel"]) in (3, 5) for k in kernels.values())


# ---------------------------------------------------------------- predict


def test_predict_matches_the_run_and_the_labels(client: TestClient, digits_run: Path, digits) -> None:
    run = load_run(digits_run)
    correct = 0
    for data, label in digits:
        reply = post_image(client, "/api/predict?topk=10", data).json()["predictions"]
        probs = [p["probability"] for p in reply]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
        expected = run.predict_proba(data)[0]
        got = torch.zeros(10)
        for p in reply:
            got[p["index"]] = p["probability"]
        assert torch.allclose(got, expected, atol=1e-6)  # the same conversion and model as `cnnlab predict`
        correct += reply[0]["class"] == str(label)
    assert correct >= 22, f"{correct}/24 test digits right"  # the run's test accuracy is about 95%


def test_predict_accepts_multipart_json_data_url_and_raw(client: TestClient, digits) -> None:
    data, _ = digits[0]
    b64 = base64.b64encode(data).decode()
    replies = [
        post_image(client, "/api/predict", data),
        client.post("/api/predict", json={"image": b64}),
        client.post("/api/predict", json={"image": "data:image/png;base64," + b64}),
        client.post("/api/predict", content=data, headers={"content-type": "image/png"}),
        client.post("/api/predict", files={"image": ("x.bin", data, "application/octet-stream")}),
    ]
    assert [r.status_code for r in replies] == [200] * 5
    assert len({json.dumps(r.json()) for r in replies}) == 1


def test_predict_returns_the_image_as_the_model_sees_it(client: TestClient, digits) -> None:
    reply = client.post("/api/predict?topk=3&input_image=true", files={"image": ("d.png", digits[0][0], "image/png")})
    body = reply.json()
    assert len(body["predictions"]) == 3
    img = decode_data_url(body["input_image"])
    assert img.size == (224, 224) and img.mode == "L"  # 28x28 gray, each pixel an 8x8 block
    arr = np.asarray(img)
    assert (arr[::8, ::8].repeat(8, 0).repeat(8, 1) == arr).all()  # nearest-neighbour: flat blocks
    assert arr.max() > 200 and arr.min() < 30  # a white digit on black


# ---------------------------------------------------------------- bad input, limits


def test_bad_uploads_get_clear_json_errors_and_the_server_keeps_serving(client: TestClient, digits) -> None:
    png = digits[0][0]
    cases = [
        (post_image(client, "/api/predict", b"this is not an image"), 400, "not an image"),
        (post_image(client, "/api/predict", png[: len(png) // 2]), 400, "truncated"),
        (client.post("/api/predict", files={"image": ("a.txt", b"hello", "text/plain")}), 415, "not an image"),
        (client.post("/api/predict", content=b"hello", headers={"content-type": "text/plain"}), 415, "media type"),
        (client.post("/api/predict", json={"picture": "abc"}), 415, "no image"),
        (client.post("/api/predict", json={"image": 42}), 415, "base64"),
        (client.post("/api/predict", json={"image": "not base64!"}), 400, "base64"),
        (client.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"}), 400, "JSON"),
        (client.post("/api/predict", content=b"", headers={"content-type": "image/png"}), 400, "empty"),
        (client.post("/api/predict?topk=0", content=png, headers={"content-type": "image/png"}), 422, "topk"),
        (client.post("/api/explain?target=eleven", content=png, headers={"content-type": "image/png"}), 422, "class"),
        (client.post("/api/explain?layer=fc9", content=png, headers={"content-type": "image/png"}), 422, "conv1"),
    ]
    for reply, status, words in cases:
        assert reply.status_code == status, reply.text
        detail = reply.json()["detail"]
        assert isinstance(detail, str) and words.lower() in detail.lower(), detail
    assert post_image(client, "/api/predict", png).status_code == 200


def test_uploads_over_the_limit_get_413(client: TestClient, digits) -> None:
    big = b"\0" * (10 * 2**20 + 1)
    by_length = client.post("/api/predict", content=big, headers={"content-type": "image/png"})
    assert by_length.status_code == 413 and "10 MiB" in by_length.json()["detail"]
    as_file = client.post("/api/predict", files={"image": ("big.png", big, "image/png")})
    assert as_file.status_code == 413

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        for _ in range(11):
            yield b"\0" * 2**20

    streamed = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert streamed.status_code == 413
    assert post_image(client, "/api/predict", digits[0][0]).status_code == 200


def test_content_length_over_the_limit_is_refused_without_reading_the_body() -> None:
    sent: list[dict] = []

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/predict", "headers": [(b"content-length", b"2000")]}
    asyncio.run(BodySizeLimit(app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert "limit" in json.loads(sent[1]["body"])["detail"]


def test_a_small_limit_is_configurable(digits_run: Path, digits) -> None:
    small = TestClient(create_app(digits_run, max_upload_bytes=100, max_pixels=1000))
    assert post_image(small, "/api/predict", digits[0][0]).status_code == 413  # the PNG is over 100 bytes
    roomy = TestClient(create_app(digits_run, max_pixels=1000))
    reply = post_image(roomy, "/api/predict", digits[0][0])  # 64x64 = 4,096 pixels
    assert reply.status_code == 413 and "4,096 pixels" in reply.json()["detail"]


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    files = {"huge": png_bomb(30000, 30000), "big_rgb": png_bomb(9000, 9000, color_type=2, bit_depth=8)}
    out = {}
    for name, data in files.items():
        assert len(data) < 300_000  # tiny on disk ...
        out[name] = folder / f"{name}.png"
        out[name].write_bytes(data)
    return out


def _peak_rss_kib(pid: int | str = "self") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM:")))


@pytest.mark.slow
def test_decompression_bombs_are_refused_without_decoding(digits_run: Path, bombs, digits) -> None:
    # ... and huge in memory: decoding the 9000x9000 RGB one (below Pillow's own limit) takes over 200 MB.
    control = subprocess.run(
        [sys.executable, "-c", "import io,sys; from PIL import Image; from pathlib import Path\n"
         "def peak(): return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
         f"before = peak(); Image.open({str(bombs['big_rgb'])!r}).load(); print(peak() - before)"],
        capture_output=True, text=True, timeout=60)
    assert int(control.stdout) > 200_000, control.stdout + control.stderr
    # The real server, started by the CLI: its peak memory must barely move while it refuses both.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(digits_run), "--port", str(port),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, proc)
        assert httpx.post(url + "/api/predict", files={"image": ("d.png", digits[0][0], "image/png")}).status_code \
            == 200  # warm: lazy imports and first-call allocations are behind us
        before = _peak_rss_kib(proc.pid)
        for name, path in bombs.items():
            reply = httpx.post(url + "/api/predict", files={"image": (path.name, path.read_bytes(), "image/png")},
                               timeout=60)
            assert reply.status_code == 413, (name, reply.text)
            assert "pixels" in reply.json()["detail"]
        grown = _peak_rss_kib(proc.pid) - before
        assert grown < 100 * 1024, f"peak RSS grew by {grown / 1024:.0f} MiB"
        assert httpx.get(url + "/api/health").json()["status"] == "ok"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "serving lenet" in out


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"no server at {url} after {timeout} s")


# ---------------------------------------------------------------- explain


def test_explain_gives_feature_maps_and_gradcam(client: TestClient, digits_run: Path, digits) -> None:
    from cnnlab.inspect import FeatureExtractor

    data, label = digits[0]
    body = post_image(client, "/api/explain", data).json()
    assert [layer["name"] for layer in body["layers"]] == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]
    assert body["target"] == {"index": label, "class": str(label)}  # the predicted class, here the right one
    fm = body["feature_maps"]
    assert fm["layer"] == "conv1" and [m["channel"] for m in fm["maps"]] == list(range(6))
    assert decode_data_url(fm["maps"][0]["image"]).size == (28, 28)
    run = load_run(digits_run)
    with FeatureExtractor(run.model, ["conv1"]) as fx, torch.no_grad():
        run.model(run.pipeline.load(data))
    ref = fx.features["conv1"][0]
    assert [m["min"] for m in fm["maps"]] == pytest.approx([float(c.min()) for c in ref], abs=1e-5)
    assert [m["max"] for m in fm["maps"]] == pytest.approx([float(c.max()) for c in ref], abs=1e-5)
    assert body["gradcam"]["layer"] == "pool2"
    cam = decode_data_url(body["gradcam"]["image"])
    assert cam.size == (224, 224) and cam.mode == "RGB"
    other = post_image(client, "/api/explain?layer=conv2&channels=4&target=3", data).json()
    assert other["feature_maps"]["layer"] == "conv2" and len(other["feature_maps"]["maps"]) == 4
    assert decode_data_url(other["feature_maps"]["maps"][0]["image"]).size == (10, 10)
    assert other["target"]["index"] == 3 and other["gradcam"]["image"] != body["gradcam"]["image"]


def test_concurrent_predict_and_explain_give_the_sequential_answers(digits_run: Path, digits) -> None:
    """Explanations hook a private copy of the model under a lock; predictions share the model freely."""
    app = create_app(digits_run)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:

        def predict(i: int) -> list:
            r = http.post("/api/predict?topk=10", files={"image": ("d.png", digits[i][0], "image/png")})
            assert r.status_code == 200, r.text
            return r.json()["predictions"]

        def explain(i: int) -> tuple:
            r = http.post("/api/explain?layer=conv2", files={"image": ("d.png", digits[i][0], "image/png")})
            assert r.status_code == 200, r.text
            b = r.json()
            return b["target"]["index"], [(m["min"], m["max"]) for m in b["feature_maps"]["maps"]], b["predictions"]

        jobs = [(predict, i) for i in range(16)] + [(explain, i) for i in range(8)]
        sequential = [fn(i) for fn, i in jobs]
        with ThreadPoolExecutor(max_workers=12) as pool:
            for _ in range(2):
                parallel = list(pool.map(lambda job: job[0](job[1]), jobs[::-1]))[::-1]
                assert parallel == sequential


# ---------------------------------------------------------------- convolve


def _reference(kernel, stride=1, padding=0, mode="gray", size=256) -> torch.Tensor:
    from cnnlab.conv.images import sample_image, to_gray

    x = sample_image("china.jpg", size=size)
    x = to_gray(x) if mode == "gray" else x
    k = torch.tensor(kernel, dtype=torch.float32)
    if mode == "summed":
        return F.conv2d(x[None], k.expand(3, *k.shape)[None], stride=stride, padding=padding)[0]
    return F.conv2d(x[:, None], k[None, None], stride=stride, padding=padding)[:, 0]


def test_convolve_the_sample_photo(client: TestClient) -> None:
    sobel = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    body = client.post("/api/convolve", json={"kernel": sobel, "pixel": [40, 100]}).json()
    assert body["input"] == {"height": 171, "width": 256, "channels": 1, "image": body["input"]["image"],
                             "source": "sample"}
    out = body["output"]
    assert (out["height"], out["width"]) == (169, 254) == (body["size"]["height"], body["size"]["width"])
    assert decode_data_url(out["image"]).size == (254, 169)
    assert "floor((171 + 2*0 - 1*(3-1) - 1) / 1) + 1" in body["size"]["height_worked"]
    assert body["size"]["width_worked"].endswith("= 254")
    assert "symmetric" in out["scaling"]  # an edge kernel sums to 0: signed values around mid-gray
    ref = _reference(sobel)
    assert out["min"] == pytest.approx(float(ref.min()), abs=1e-4)
    assert body["pixel"]["value"] == pytest.approx(float(ref[0, 40, 100]), abs=1e-4)
    assert body["pixel"]["output_value"] == pytest.approx([float(ref[0, 40, 100])], abs=1e-4)
    assert body["pixel"]["text"].startswith("out[40, 100] = sum(Xpad[40:43, 100:103] * K)")
    products = np.array(body["pixel"]["channels"][0]["products"])
    assert products.sum() == pytest.approx(body["pixel"]["value"], abs=1e-3)


def test_convolve_stride_padding_and_colour_modes(client: TestClient) -> None:
    sharpen = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    rgb = client.post("/api/convolve", json={"kernel": sharpen, "stride": 2, "padding": 1, "mode": "rgb",
                                             "pixel": [10, 20], "include_input": False}).json()
    assert (rgb["output"]["height"], rgb["output"]["width"], rgb["output"]["channels"]) == (86, 128, 3)
    assert "image" not in rgb["input"] and "clipped" in rgb["output"]["scaling"]
    ref = _reference(sharpen, 2, 1, "rgb")
    assert rgb["pixel"]["value"] == pytest.approx(ref[:, 10, 20].tolist(), abs=1e-4)
    assert "not added" in rgb["pixel"]["combine"] and len(rgb["pixel"]["channels"]) == 3
    assert (rgb["pixel"]["row0"], rgb["pixel"]["col0"]) == (20, 40)  # the window starts at (i*s, j*s), padded
    summed = client.post("/api/convolve", json={"kernel": sharpen, "stride": 2, "padding": 1, "mode": "summed",
                                                "pixel": [10, 20]}).json()
    assert summed["output"]["channels"] == 1
    assert summed["pixel"]["value"] == pytest.approx(float(_reference(sharpen, 2, 1, "summed")[0, 10, 20]), abs=1e-4)
    assert summed["pixel"]["value"] == pytest.approx(sum(rgb["pixel"]["value"]), abs=1e-4)
    assert "added" in summed["pixel"]["combine"]
    gauss = client.post("/api/convolve", json={"kernel": "gaussian", "image": "sample:flower.jpg"}).json()
    assert gauss["kernel_name"] == "gaussian" and len(gauss["kernel"]) == 5 and gauss["input"]["source"] == \
        "sample:flower.jpg"


def test_convolve_an_upload(client: TestClient, digits) -> None:
    reply = client.post("/api/convolve", files={"image": ("d.png", digits[0][0], "image/png")},
                        data={"kernel": "[[0,0,0],[0,1,0],[0,0,0]]", "padding": "1", "pixel": "5,6"})
    body = reply.json()
    assert reply.status_code == 200, body
    assert body["input"]["source"] == "upload" and (body["output"]["height"], body["output"]["width"]) == (64, 64)
    original = np.asarray(Image.open(io.BytesIO(digits[0][0])), dtype=np.float32) / 255
    assert body["pixel"]["value"] == pytest.approx(float(original[5, 6]), abs=1e-6)  # identity: the pixel itself


@pytest.mark.parametrize("kernel, words", [
    ([[1, 2, 3], [4, 5], [6, 7, 8]], "row 2 has 2 numbers"),
    ([[1, 2, 3], [4, "x", 6], [7, 8, 9]], "kernel[2][2] is 'x', not a number"),
    ([[1, 2, 3], [4, True, 6], [7, 8, 9]], "not a number"),
    ([[1, 2, 3, 4]] * 4, "4x4"),
    ([[1]], "1x1"),
    ([], "list of lists"),
    ([1, 2, 3], "row 1"),
    ([[1, 2, 3], [4, 5, 6], [7, 8, 1e9]], "between"),
    ("edge", "1x2"),
    ("no_such_kernel", "unknown kernel"),
    ("gaussian:n=7", "7x7"),
])
def test_invalid_kernels_get_422(client: TestClient, kernel, words: str) -> None:
    reply = client.post("/api/convolve", json={"kernel": kernel})
    assert reply.status_code == 422, reply.text
    assert words in reply.json()["detail"]


@pytest.mark.parametrize("raw", ['{"kernel": [[0, 0, 0], [0, NaN, 0], [0, 0, 0]]}',
                                 '{"kernel": [[0, 0, 0], [0, Infinity, 0], [0, 0, 0]]}',
                                 '{"kernel": [[0, 0, 0], [0, null, 0], [0, 0, 0]]}'])
def test_non_finite_kernels_get_422(client: TestClient, raw: str) -> None:
    reply = client.post("/api/convolve", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 422 and "kernel[2][2]" in reply.json()["detail"]


@pytest.mark.parametrize("fields, words", [
    ({"stride": 0}, "stride must be an integer from 1 to 4"),
    ({"stride": 5}, "stride"),
    ({"stride": 1.5}, "stride"),
    ({"padding": -1}, "padding must be an integer from 0 to 4"),
    ({"padding": 5}, "padding"),
    ({"mode": "cmyk"}, "mode"),
    ({"pixel": [1]}, "pixel"),
    ({"size": 3}, "size"),
    ({"image": "sample:dog.jpg"}, "unknown sample photo"),
    ({"kernel": None}, "no kernel"),
])
def test_invalid_convolve_parameters_get_422(client: TestClient, fields: dict, words: str) -> None:
    reply = client.post("/api/convolve", json={"kernel": "sobel_x", **fields})
    assert reply.status_code == 422, reply.text
    assert words in reply.json()["detail"]
    assert client.post("/api/convolve", json={"kernel": "sobel_x"}).status_code == 200


def test_a_pixel_outside_the_output_is_not_found(client: TestClient) -> None:
    reply = client.post("/api/convolve", json={"kernel": "sobel_x", "pixel": [500, 0]})
    assert reply.status_code == 404 and "outside the 169x254 output" in reply.json()["detail"]
    assert client.post("/api/convolve", json={"kernel": "sobel_x", "pixel": [168, 253]}).status_code == 200


def test_form_fields_are_held_to_the_schemas_patterns(client: TestClient, digits) -> None:
    from cnnlab.apps.serve.playground import FORM_PATTERNS, KERNEL_NAME_PATTERN, KERNEL_TEXT_PATTERN

    assert re.search(KERNEL_NAME_PATTERN, "gaussian:n=3,sigma=0.5") and not re.search(KERNEL_NAME_PATTERN, "edge")
    assert re.search(KERNEL_TEXT_PATTERN, "[[0, 1e-7, 0], [1, -4, 1], [0, 1, 0]]")
    assert not re.search(KERNEL_TEXT_PATTERN, "[[0,1,0],[1,-4,1],[0,1,1001]]")
    assert re.search(FORM_PATTERNS["pixel"], "[5,6]") and re.search(FORM_PATTERNS["pixel"], "5,6")
    files = {"image": ("d.png", digits[0][0], "image/png")}
    ok = client.post("/api/convolve", files=files, data={"kernel": "[[0,1,0],[1,-4,1],[0,1,0]]", "stride": "2",
                                                          "pixel": "[3,4]", "include_input": "false"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["pixel"]["i"] == 3 and "image" not in ok.json()["input"]  # the page's form, as it sends it
    for data in ({"kernel": "sobel_x", "stride": "٣"}, {"kernel": "sobel_x", "include_input": "no"},
                 {"kernel": "gaussian:sigma=1, n=5"}, {"kernel": "[[0,0,0],[0,1e3,0],[0,0,0]]"}):
        reply = client.post("/api/convolve", files=files, data=data)
        assert reply.status_code == 422, (data, reply.text)


def test_every_named_kernel_of_the_playground_is_in_the_schema(client: TestClient) -> None:
    from cnnlab.apps.serve.playground import KERNEL_NAME_PATTERN

    names = [k["name"] for k in client.get("/api/kernels").json()]
    assert names and all(re.search(KERNEL_NAME_PATTERN, n) for n in names)


@pytest.mark.slow
def test_serve_an_exported_model(digits_run: Path, tmp_path: Path, digits) -> None:
    """An exported file predicts like its run; feature maps, Grad-CAM and the overview need the PyTorch run (501)."""
    from cnnlab.apps.export import export_run

    path = export_run(digits_run, "onnx", out=tmp_path / "lenet.onnx").path
    exported = TestClient(create_app(path))
    info = exported.get("/api/model").json()
    assert info["name"] == "lenet" and info["dataset"] == "digits" and info["can_explain"] is False
    reply = post_image(exported, "/api/predict?topk=10", digits[0][0]).json()["predictions"]
    expected = load_run(digits_run).predict_proba(digits[0][0])[0]
    assert all(abs(p["probability"] - float(expected[p["index"]])) < 1e-5 for p in reply)
    for url in ("/api/explain", "/api/layers", "/api/neuron?layer=conv1&channel=0"):
        refused = post_image(exported, url, digits[0][0])
        assert refused.status_code == 501 and "run folder" in refused.json()["detail"]


def test_an_unexpected_failure_is_a_json_500_and_the_server_goes_on(digits_run: Path, digits) -> None:
    class Broken:  # a predictor whose model fails at inference time
        def __init__(self, run):
            self.classes, self.input_size, self.pipeline = run.classes, run.input_size, run.pipeline

        def predict_proba(self, images):
            raise RuntimeError("out of cheese")

        def logits(self, x):
            raise RuntimeError("out of cheese")

    from cnnlab.apps.serve.state import ServedModel

    broken = TestClient(create_app(model=ServedModel(Broken(load_run(digits_run)), "a broken model")),
                        raise_server_exceptions=False)
    reply = post_image(broken, "/api/predict", digits[0][0])
    assert reply.status_code == 500 and reply.json() == {"detail": "internal error (RuntimeError): see the server log"}
    assert broken.get("/api/health").json()["status"] == "ok"


# ---------------------------------------------------------------- the default model and its cache


def test_without_a_run_the_default_model_is_trained_once_and_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(serve_state, "DEFAULT_EPOCHS", 1)  # the real default trains longer; the path is the same
    first = TestClient(create_app())
    info = first.get("/api/model").json()
    folder = serve_state.default_run_dir()
    assert folder.parent == tmp_path / "cache" / "serve" and (folder / "results.json").is_file()
    assert "default model" in info["source"] and str(tmp_path) not in json.dumps(info)  # no path of this machine
    assert info["name"] == "lenet" and info["input_size"] == [1, 28, 28]
    stamp = (folder / "checkpoints" / "best.pt").stat().st_mtime_ns

    def train_again(out: Path, epochs: int) -> None:
        raise AssertionError("the default model was trained a second time")

    monkeypatch.setattr(serve_state, "_train_default", train_again)
    again = TestClient(create_app())
    assert (folder / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
    assert again.post("/api/predict", files={"image": ("d.png", digits_test(1)[0][0], "image/png")}).status_code == 200
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left behind


def test_concurrent_first_starts_publish_one_complete_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    barrier = threading.Barrier(4)
    trained: list[str] = []

    def slow_trainer(out: Path, epochs: int) -> None:
        barrier.wait()  # all four start training before any finishes
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "best.pt").write_text(threading.current_thread().name)
        time.sleep(0.2)
        (out / "results.json").write_text(threading.current_thread().name)  # written last: a run is complete
        trained.append(threading.current_thread().name)

    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(lambda _: serve_state.default_run(epochs=2, trainer=slow_trainer), range(4)))
    assert len(trained) == 4 and len(set(paths)) == 1
    folder = paths[0]
    winner = (folder / "results.json").read_text()
    assert (folder / "checkpoints" / "best.pt").read_text() == winner  # one trainer's files, never a mix
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_a_failed_first_start_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))

    def broken(out: Path, epochs: int) -> None:
        out.mkdir()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        serve_state.default_run(trainer=broken)
    assert list((tmp_path / "serve").iterdir()) == []


def test_cli_serve_help() -> None:
    from cnnlab.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    assert main(["serve", "--port", "0"]) == 2  # refused before any model is loaded
    assert main(["serve", "no/such/run"]) == 2


# ---------------------------------------------------------------- the network at a glance: /api/layers, /api/neuron


def sprite_maps(layer: dict) -> list[np.ndarray]:
    """Each map of a layer's sprite as (H, W, 3) colours, cut out of the grid the reply describes."""
    s = layer["sprite"]
    img = np.asarray(decode_data_url(s["image"]).convert("RGB"))
    h, w, cols = s["height"], s["width"], s["columns"]
    assert img.shape[:2] == (-(-s["count"] // cols) * h, cols * w)
    return [img[(k // cols) * h:(k // cols + 1) * h, (k % cols) * w:(k % cols + 1) * w] for k in range(s["count"])]


def test_layers_shows_every_map_layer_on_one_scale_per_layer(client: TestClient, digits_run: Path, digits) -> None:
    from cnnlab.apps.serve.encode import ColourScale
    from cnnlab.inspect import FeatureExtractor

    data, label = digits[0]
    reply = post_image(client, "/api/layers", data)
    assert reply.status_code == 200 and len(reply.content) < 200_000  # LeNet's whole network: ~30 KB
    body = reply.json()
    layers = body["layers"]
    assert [(layer["name"], layer["kind"], layer["shape"]) for layer in layers] == [
        ("conv1", "conv", [6, 28, 28]), ("relu1", "act", [6, 28, 28]), ("pool1", "pool", [6, 14, 14]),
        ("conv2", "conv", [16, 10, 10]), ("relu2", "act", [16, 10, 10]), ("pool2", "pool", [16, 5, 5])]
    run = load_run(digits_run)
    with FeatureExtractor(run.model) as fx, torch.no_grad():
        run.model(run.pipeline.load(data))
    for layer in layers:
        ref = fx.features[layer["name"]][0]
        assert layer["range"] == pytest.approx([float(ref.min()), float(ref.max())], abs=1e-6)
        assert len(layer["maps"]) == min(8, ref.shape[0]) and layer["sprite"]["count"] == len(layer["maps"])
        scale = ColourScale(layer["scale"]["low"], layer["scale"]["high"])
        for m, colours in zip(layer["maps"], sprite_maps(layer)):
            c = m["channel"]
            assert (m["min"], m["max"]) == pytest.approx((float(ref[c].min()), float(ref[c].max())), abs=1e-6)
            expected = scale.colours(ref[c].numpy())  # every pixel: its value's colour on the layer's scale
            assert np.abs(colours.astype(int) - expected.astype(int)).max() <= 3
    assert layers[1]["scale"]["low"] == 0  # after a ReLU: a scale from 0
    assert layers[0]["scale"]["low"] == -layers[0]["scale"]["high"]  # signed: symmetric, white at 0
    assert body["input"]["shape"] == [1, 28, 28] and decode_data_url(body["input"]["image"]).size == (224, 224)
    head = body["head"]
    assert head["layer"] == "fc2" and [a["name"] for a in head["after_maps"]] == ["fc1", "relu3", "fc2"]
    probs = run.predict_proba(data)[0]
    assert [c["probability"] for c in head["classes"]] == pytest.approx(probs.tolist(), abs=1e-6)
    assert body["predictions"][0]["class"] == str(label)
    more = post_image(client, "/api/layers?layer=conv2&channels=16", data).json()
    assert list(more) == ["layers"] and len(more["layers"][0]["maps"]) == 16
    assert len(sprite_maps(more["layers"][0])) == 16


def test_neuron_works_out_a_conv_value_equal_to_torchs_convolution(client: TestClient, digits_run: Path,
                                                                     digits) -> None:
    data, _ = digits[1]
    run = load_run(digits_run)
    x = run.pipeline.load(data)
    conv1, conv2 = run.model.conv1, run.model.conv2
    with torch.no_grad():
        ref1 = F.conv2d(x, conv1.weight, conv1.bias, padding=2)[0]
        ref2 = F.conv2d(F.max_pool2d(F.relu(ref1[None]), 2), conv2.weight, conv2.bias)[0]
    for layer, ref, (c, i, j) in [("conv1", ref1, (0, 0, 0)), ("conv1", ref1, (5, 14, 27)),
                                  ("conv2", ref2, (15, 9, 0)), ("conv2", ref2, (3, 4, 6))]:
        r = post_image(client, f"/api/neuron?layer={layer}&channel={c}&row={i}&col={j}", data).json()
        assert set(r) >= {"patch", "kernel", "bias", "sum", "value"}
        again = sum(p * k for pc, kc in zip(r["patch"], r["kernel"]) for pr, kr in zip(pc, kc)
                    for p, k in zip(pr, kr)) + r["bias"]
        assert r["sum"] == pytest.approx(again, rel=1e-12)  # sum: from the returned patch and kernel
        assert r["sum"] == pytest.approx(r["value"], rel=1e-4) and r["agrees"]
        assert r["value"] == pytest.approx(float(ref[c, i, j]), abs=1e-6)  # value: the forward pass's
    corner = post_image(client, "/api/neuron?layer=conv1&channel=0&row=0&col=0", data).json()
    assert corner["padding"][0] == [True] * 5 and corner["padding"][2] == [True, True, False, False, False]
    assert corner["window"] == {"row0": -2, "col0": -2} and corner["chain"][1]["layer"] == "relu1"
    pool = post_image(client, "/api/neuron?layer=pool1&channel=2&row=3&col=4", data).json()
    assert pool["op"] == "max" and pool["rows"] == [6, 7] and pool["agrees"]
    fc = post_image(client, "/api/neuron?layer=fc2&channel=7", data).json()
    assert fc["class"] == "7" and fc["agrees"] and fc["softmax"]["agrees"]
    assert fc["softmax"]["value"] == pytest.approx(float(run.predict_proba(data)[0][7]), abs=1e-6)


def test_clicks_after_the_overview_reuse_its_forward_pass(digits_run: Path, digits, monkeypatch) -> None:
    from cnnlab.apps.serve.state import ServedModel

    app = create_app(digits_run)
    http = TestClient(app)
    passes = []
    real = ServedModel.record
    monkeypatch.setattr(ServedModel, "record", lambda self, x: passes.append(1) or real(self, x))
    data = digits[2][0]
    assert post_image(http, "/api/layers", data).status_code == 200
    for j in range(5):
        assert post_image(http, f"/api/neuron?layer=conv2&channel=1&row=2&col={j}", data).status_code == 200
    assert len(passes) == 1 and app.state.overviews.hits == 5
    assert post_image(http, "/api/neuron?layer=conv1&channel=0&row=0&col=0&invert=false", data).status_code == 200
    assert len(passes) == 2  # another input (not inverted): another pass
    cache = app.state.overviews
    for data, _ in digits[:20]:
        post_image(http, "/api/layers?channels=1", data)
    assert len(cache) == cache.entries  # bounded


@pytest.mark.parametrize("query, status, words", [
    ("/api/neuron?layer=conv9&channel=0", 422, "Did you mean: conv"),
    ("/api/neuron?layer=conv1&channel=6", 404, "outside conv1's 6x28x28 output"),  # the layer is there, not this
    ("/api/neuron?layer=conv2&channel=0&row=10&col=0", 404, "0 <= row < 10"),
    ("/api/neuron?layer=fc2&channel=10", 404, "10 outputs"),
    ("/api/neuron?layer=fc2&channel=1&row=3", 404, "row 0, col 0"),
    ("/api/neuron?channel=0", 422, "layer"),
    ("/api/neuron?layer=conv1&channel=-1", 422, "channel"),
    ("/api/layers?channels=0", 422, "channels"),
    ("/api/layers?layer=fc1", 422, "layers with maps: conv1"),
])
def test_a_layer_or_position_that_does_not_exist_gets_a_clear_4xx(client: TestClient, digits, query: str,
                                                                   status: int, words: str) -> None:
    reply = post_image(client, query, digits[0][0])
    assert reply.status_code == status, reply.text
    assert words in reply.json()["detail"]


def test_more_maps_than_the_whole_network_shows_are_capped_and_said(client: TestClient, digits) -> None:
    reply = post_image(client, "/api/layers?channels=65", digits[0][0]).json()
    assert max(len(layer["maps"]) for layer in reply["layers"]) == 16  # conv2's all; no layer has more than 64
    assert any("at most 64 maps per layer" in note and "layer=NAME" in note for note in reply["notes"])


def test_the_schema_offers_this_models_layers_and_classes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    def enum(path: str, name: str) -> list:
        params = schema["paths"][path]["post"]["parameters"]
        return next(p for p in params if p["name"] == name)["schema"].get("enum")

    assert enum("/api/layers", "layer") == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]
    assert enum("/api/neuron", "layer") == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "fc2"]
    assert enum("/api/explain", "target") == [str(i) for i in range(10)]
    assert enum("/api/predict", "tta") == ["none"]  # a mirrored digit is another symbol: flip is refused
    assert "404" in schema["paths"]["/api/neuron"]["post"]["responses"]


def test_the_overview_and_worked_values_for_fastnet_and_efficientnet_lite0(fastnet_run: Path, lite0_run: Path,
                                                                           digits, photos_dir: Path) -> None:
    photo = (photos_dir / "chelsea.png").read_bytes()
    for run_dir, data, first in [(fastnet_run, digits[0][0], "conv1.conv"), (lite0_run, photo, "conv_stem")]:
        http = TestClient(create_app(run_dir))
        reply = post_image(http, "/api/layers", data)
        assert reply.status_code == 200 and len(reply.content) < 2_000_000
        body = reply.json()
        assert body["layers"][0]["name"] == first and body["layers"][0]["kind"] == "conv"
        run = load_run(run_dir)
        probs = run.predict_proba(data)[0]
        assert [c["probability"] for c in body["head"]["classes"]] == pytest.approx(probs.tolist(), abs=1e-5)
        for layer in body["layers"]:
            c, h, w = layer["shape"]
            for pos in [(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w // 2)]:
                r = post_image(http, "/api/neuron?layer={}&channel={}&row={}&col={}".format(layer["name"], *pos),
                               data).json()
                assert r["agrees"] and all(s.get("agrees", True) for s in r["chain"]), (layer["name"], pos, r)
        top = int(probs.argmax())
        r = post_image(http, f"/api/neuron?layer={body['head']['layer']}&channel={top}", data).json()
        assert r["agrees"] and r["softmax"]["agrees"] and r["class"] == run.classes[top]
    groups = {layer["group"] for layer in body["layers"]}  # EfficientNet-Lite0's blocks
    assert {"blocks.0.0", "blocks.6.0"} <= groups
    dw = post_image(http, "/api/neuron?layer=blocks.2.0.conv_dw&channel=7&row=0&col=0", photo).json()
    assert dw["in_channels"] == [7, 8] and len(dw["patch"]) == 1 and dw["groups"] > 1  # depthwise: its own channel
    assert dw["pads"]["bottom"] - dw["pads"]["top"] in (0, 1)  # TensorFlow's "same": the odd one at the end
