"""The REST API says what it checks: fuzzed from its own OpenAPI schema with every check (a request the schema
allows is served, one it forbids is refused, every reply documented), and fed hand-made garbage, it answers every
request with a documented status and body, never a 500."""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from PIL import Image

import schemathesis_hooks  # noqa: F401  (real image files where the schema says an image)
from cnnlab.apps.serve import create_app
from cnnlab.cli.main import main


@pytest.fixture(scope="module")
def app(digits_run: Path):
    return create_app(digits_run)


@pytest.mark.slow
def test_every_operation_conforms_to_its_own_schema(app) -> None:
    """Schema-valid requests (and the mutations schemathesis makes of them), 60 per operation, under every check:
    schema-valid ones served, schema-invalid ones refused, a documented status code and body, no server error."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Words from the app's source make good fuzz, except as images: a format no validator checks would let them in
    # where the schema says "an image file as base64". Images come from schemathesis_hooks instead.
    schema.config.analysis.constants.enabled = False
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8  # predict, explain, layers, neuron, convolve, model, kernels, health
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case) -> None:
            case.call_and_validate()  # every check schemathesis has

        conforms()


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 200).save(buf, format="PNG")
    return buf.getvalue()


GARBAGE = [
    ("/api/predict", {"content": png()[:20], "headers": {"Content-Type": "image/png"}}, 400),  # truncated
    ("/api/predict", {"content": b"\x00" * 64, "headers": {"Content-Type": "image/png"}}, 400),
    ("/api/predict", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
    ("/api/predict", {"json": {"image": 12}}, 415),
    ("/api/predict", {"json": {"image": "%%%"}}, 400),
    ("/api/predict?topk=-5", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),
    ("/api/predict?topk=99999999999999999999", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),
    ("/api/predict?tta=rotate", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),
    ("/api/explain?channels=0", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),
    ("/api/explain?target=zebra", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),
    ("/api/layers", {"content": png()[:20], "headers": {"Content-Type": "image/png"}}, 400),
    ("/api/layers?channels=100000", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),
    ("/api/layers?layer=fc2", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),  # no maps
    ("/api/neuron?layer=conv1&channel=0", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
    ("/api/neuron?layer=conv1&channel=99999999999999999999", {"content": png(), "headers": {"Content-Type":
                                                                                           "image/png"}}, 422),
    ("/api/neuron?layer=conv1&channel=0&row=28", {"content": png(), "headers": {"Content-Type": "image/png"}}, 404),
    ("/api/neuron?layer=" + "x" * 400 + "&channel=0", {"content": png(), "headers": {"Content-Type": "image/png"}},
     422),
    ("/api/neuron?layer=conv1", {"content": png(), "headers": {"Content-Type": "image/png"}}, 422),  # no channel
    ("/api/convolve", {"json": {"kernel": "gaussian:n=100000"}}, 422),  # ~3 GB if it were built
    ("/api/convolve", {"json": {"kernel": ""}}, 422),
    ("/api/convolve", {"files": {"kernel": (None, "")}}, 422),
    ("/api/convolve", {"json": {"kernel": " sobel_x"}}, 422),  # readable, but not as the schema writes it
    ("/api/convolve", {"files": {"kernel": (None, "sobel_x"), "stride": (None, " 2")}}, 422),
    ("/api/convolve", {"json": {"kernel": "sobel_x", "stride": "2"}}, 422),  # JSON has numbers
    ("/api/convolve", {"json": {"kernel": "sobel_x", "include_input": "no"}}, 422),
    ("/api/convolve", {"json": {"kernel": "sobel_x", "pixel": [5000, 0]}}, 404),
    ("/api/predict", {"json": {"image": ""}}, 400),
    ("/api/convolve", {"files": {"image": ("x.png", png((2, 2)), "image/png")}}, 422),  # smaller than the kernel
    ("/api/explain", {"files": {"image": ("x.png", b"", "image/png")}}, 400),
    ("/api/convolve", {"json": {"kernel": "gaussian:n=5,sigma=1e400"}}, 422),
    ("/api/convolve", {"json": {"kernel": [[1, 2], [3]]}}, 422),
    ("/api/convolve", {"json": {"kernel": {"a": 1}}}, 422),
    ("/api/convolve", {"json": {"kernel": "sobel_x", "stride": 10**30}}, 422),
    ("/api/convolve", {"json": {"kernel": "sobel_x", "size": "big"}}, 422),
    ("/api/convolve", {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"Content-Type": "application/json"}},
     422),  # nested deeper than any parser goes
    ("/api/convolve", {"content": b"{\"kernel\": ", "headers": {"Content-Type": "application/json"}}, 400),
]


@pytest.mark.parametrize("url, body, status", GARBAGE)
def test_hand_made_garbage_gets_a_clear_4xx(app, url: str, body: dict, status: int) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    reply = client.post(url, **body)
    assert reply.status_code == status, reply.text
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail


def test_the_model_endpoint_reveals_no_path_of_this_machine(app, digits_run: Path) -> None:
    info = TestClient(app).get("/api/model").json()
    assert str(digits_run.parent) not in json.dumps(info) and info["source"] == f"run {digits_run.name}"


def test_a_port_in_use_is_one_line_before_any_url(digits_run: Path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        capsys.readouterr()
        assert main(["serve", str(digits_run), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "http://" not in out and f"cannot listen on 127.0.0.1:{port}" in err and len(err.splitlines()) == 1


def test_a_one_pixel_image_is_predicted(app) -> None:
    reply = TestClient(app).post("/api/predict", content=png((1, 1)), headers={"Content-Type": "image/png"})
    assert reply.status_code == 200 and len(reply.json()["predictions"]) == 5


def test_base64_images_round_trip(app) -> None:
    data = base64.b64encode(png()).decode()
    reply = TestClient(app).post("/api/predict?topk=2", json={"image": data})
    assert reply.status_code == 200 and len(reply.json()["predictions"]) == 2
