"""The FastAPI app: a JSON API for prediction, explanation, the network overview and the convolution playground, and
the web page at `/`.

    app = create_app("runs/lenet-digits")        # or create_app() for the default digits model
    uvicorn.run(app, host="127.0.0.1", port=8000)

Every error is JSON {"detail": "..."}: 400 unreadable image, 413 too large (bytes or pixels), 415 not an image,
422 invalid parameter (kernel, stride, layer, class, position, ...), 501 not possible with this model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from cnnlab.apps.serve import playground
from cnnlab.apps.serve.errors import ServeError
from cnnlab.apps.serve.openapi import CONVOLVE_BODY, IMAGE_BODY, choices
from cnnlab.apps.serve.overview import MAX_LAYER_CHANNELS, OverviewCache, Seen, layers_reply, neuron_reply
from cnnlab.apps.serve.state import ServedModel, input_notes, top_classes
from cnnlab.apps.serve.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, BodySizeLimit, decode_image, read_upload
from cnnlab.data.images import BadImageError
from cnnlab.errors import CnnlabError

STATIC = Path(__file__).resolve().parent / "static"

INVERT_HELP = ("invert the image first when its background is the opposite of the training images' (a digit drawn "
               "dark on white, for a model trained on white on black); the reply says whether it was")


class ErrorBody(BaseModel):
    """Every error reply: one line saying what went wrong and what to do."""

    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error replies a route can give, for its OpenAPI entry (a client generated from it expects them)."""
    about = {400: "not a readable image, or a malformed body", 404: "the position asked for is not in that output "
             "(a neuron's channel, row or column in its layer; a pixel of the convolution's output)",
             413: "too many bytes, or an image with too many pixels",
             415: "the body is not an image (nor JSON carrying one)", 422: "a parameter out of range or unknown",
             501: "not possible with this model (feature maps of an exported model, a layer type whose values "
                  "are not worked out by hand)"}
    return {code: {"model": ErrorBody, "description": about[code]} for code in codes}


IMAGE_ERRORS = _errors(400, 413, 415, 422)


def create_app(run: Any = None, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               model: ServedModel | None = None) -> FastAPI:
    """The app serving `run` (a Run, a run folder or checkpoint, an .onnx file; None: the cached digits model)."""
    served = model if model is not None else ServedModel.load(run)
    app = FastAPI(title="cnnlab", version=_version(), docs_url=None, redoc_url=None,
                  description="Predict, look inside a CNN, and play with convolution kernels. "
                              f"Serving {served.name}. Uploads up to {max_upload_bytes / 2**20:g} MiB and "
                              f"{max_pixels:,} pixels.")
    app.state.model = served
    app.state.max_pixels = max_pixels
    app.state.started = time.time()
    app.state.overviews = OverviewCache()  # one forward pass per image for /api/layers and its /api/neuron clicks
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes)
    _add_error_handlers(app)
    _add_routes(app)
    _add_overview_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_offline_docs(app)
    return app


def _add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the fastapi-offline package's copy: FastAPI's default loads it from a CDN."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-static", StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="cnnlab API",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon.png")


def _version() -> str:
    from cnnlab import __version__

    return __version__


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(BadImageError)
    async def bad_image(request: Request, exc: BadImageError) -> JSONResponse:
        return _error(400, f"not a readable image: {exc}")

    @app.exception_handler(CnnlabError)
    async def cnnlab_error(request: Request, exc: CnnlabError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # JSON like every other error; the traceback still goes to the server's log.
        return _error(500, f"internal error ({type(exc).__name__}): see the server log")

    @app.exception_handler(RequestValidationError)
    async def invalid_params(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        return _error(422, "; ".join(parts) or "invalid request")


def _model(request: Request) -> ServedModel:
    return request.app.state.model


def _decode_for_model(request: Request, data: bytes) -> Image.Image:
    served = _model(request)
    return decode_image(data, request.app.state.max_pixels, draft=served.input_size[1:])


def _add_routes(app: FastAPI) -> None:
    served: ServedModel = app.state.model
    classes = [*served.classes, *(str(i) for i in range(len(served.classes)) if str(i) not in served.classes)]

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/health", summary="Is the server up")
    async def health(request: Request) -> dict[str, Any]:
        served = _model(request)
        return {"status": "ok", "model": served.name, "uptime_s": round(time.time() - request.app.state.started, 1)}

    @app.get("/api/model", summary="The served model: name, classes, input size, layer summary")
    async def model_info(request: Request) -> dict[str, Any]:
        return _model(request).info()

    @app.get("/api/kernels", summary="Named 3x3 and 5x5 kernels for the playground")
    async def kernels() -> list[dict[str, Any]]:
        return _kernel_list()

    @app.post("/api/predict", summary="Top-k classes and probabilities for one image",
              openapi_extra={"requestBody": IMAGE_BODY}, responses=IMAGE_ERRORS)
    async def predict(request: Request,
                      topk: int = Query(5, ge=1, le=1000, description="how many classes to return (at most the "
                                                                        "model's number of classes are)"),
                      input_image: bool = Query(False, description="also return the image as the model sees it"),
                      tta: Literal["none", "flip"] = Query("none", description="test-time augmentation: none, or "
                                                           "flip (the mean of the image's outputs and its mirror's; "
                                                           "not offered for a model of digits or letters)",
                                                           json_schema_extra=choices(["none", "flip"] if served.flip_ok
                                                                                     else ["none"])),
                      invert: bool = Query(True, description=INVERT_HELP)) -> dict[str, Any]:
        upload = await read_upload(request)
        return await run_in_threadpool(_predict, request, upload.data, topk, input_image, tta, invert)

    @app.post("/api/explain", summary="Feature maps of a layer and the Grad-CAM overlay, as PNGs",
              openapi_extra={"requestBody": IMAGE_BODY}, responses={**IMAGE_ERRORS, **_errors(501)})
    async def explain(request: Request,
                      layer: str | None = Query(None, description="layer whose maps to return (default: the first)",
                                                json_schema_extra=choices(served.feature_layers)),
                      channels: int = Query(16, ge=1, le=64, description="maps (channels) of that layer to return"),
                      target: str | None = Query(None, description="class to explain, index or name "
                                                                   "(default: the predicted one)",
                                                 json_schema_extra=choices(classes)),
                      topk: int = Query(5, ge=1, le=1000),
                      invert: bool = Query(True, description=INVERT_HELP)) -> dict[str, Any]:
        upload = await read_upload(request)
        return await run_in_threadpool(_explain, request, upload.data, layer, channels, target, topk, invert)

    @app.post("/api/convolve", summary="Slide a kernel over a photo: the output, its size worked out, one pixel",
              openapi_extra={"requestBody": CONVOLVE_BODY}, responses={**IMAGE_ERRORS, **_errors(404)})
    async def convolve(request: Request) -> dict[str, Any]:
        upload = await read_upload(request, image_required=False)
        return await run_in_threadpool(_convolve, request, upload.data, upload.fields, upload.form)


def _add_overview_routes(app: FastAPI) -> None:
    """The network at a glance: every layer's maps for one image, and one value worked out (a click)."""
    served: ServedModel = app.state.model

    @app.post("/api/layers", summary="The whole network for one image: every conv, activation and pool layer's "
                                      "maps, one colour scale per layer, then the class scores",
              openapi_extra={"requestBody": IMAGE_BODY}, responses={**IMAGE_ERRORS, **_errors(501)})
    async def layers(request: Request,
                     channels: int = Query(8, ge=1, le=MAX_LAYER_CHANNELS,
                                           description="maps per layer (the first channels); at most 64 for the "
                                                       "whole network (a note says so), up to every channel with "
                                                       "`layer`"),
                     layer: str | None = Query(None, max_length=300, description="only this layer's column (e.g. "
                                               "to show all its maps)",
                                               json_schema_extra=choices(served.overview_layers)),
                     invert: bool = Query(True, description=INVERT_HELP)) -> dict[str, Any]:
        upload = await read_upload(request)
        return await run_in_threadpool(_layers, request, upload.data, channels, layer, invert)

    @app.post("/api/neuron", summary="One value worked out from the layer's weights and its input: a conv's patch, "
                                      "kernel, products and sum; a pool's window; an activation; the last linear "
                                      "layer's contributions and the softmax",
              openapi_extra={"requestBody": IMAGE_BODY}, responses={**IMAGE_ERRORS, **_errors(404, 501)})
    async def neuron(request: Request,
                     layer: str = Query(..., max_length=300, description="a layer of /api/layers, or a linear "
                                                                          "layer such as the last (its `head.layer`)",
                                        json_schema_extra=choices(served.neuron_layers)),
                     channel: int = Query(..., ge=0, le=2**20, description="output channel (a linear layer: "
                                                                           "output, e.g. the class); 404 beyond "
                                                                           "the layer's"),
                     row: int = Query(0, ge=0, le=2**20, description="row of the map (0 for a linear layer; 404 "
                                                                     "beyond the map)"),
                     col: int = Query(0, ge=0, le=2**20, description="column of the map (0 for a linear layer; "
                                                                     "404 beyond the map)"),
                     invert: bool = Query(True, description=INVERT_HELP)) -> dict[str, Any]:
        upload = await read_upload(request)
        return await run_in_threadpool(_neuron, request, upload.data, layer, channel, row, col, invert)


def _predict(request: Request, data: bytes, topk: int, input_image: bool, tta: str = "none",
             invert: bool = True) -> dict[str, Any]:
    served = _model(request)
    x, check = served.prepare(_decode_for_model(request, data), invert)
    probs = served.predict(x, tta)
    out: dict[str, Any] = {"predictions": top_classes(probs, served.classes, topk), **input_notes(check, probs)}
    if input_image:
        out["input_image"] = served.shown_png(x)
    return out


def _explain(request: Request, data: bytes, layer: str | None, channels: int, target: str | None,
             topk: int, invert: bool = True) -> dict[str, Any]:
    from cnnlab.apps.explain import resolve_class

    served = _model(request)
    cls = resolve_class(target, served.classes)
    x, check = served.prepare(_decode_for_model(request, data), invert)
    result = served.explain(x, layer, channels, cls)
    return {
        "predictions": top_classes(result.probs, served.classes, topk),
        **input_notes(check, result.probs),
        "target": {"index": result.target, "class": served.classes[result.target]},
        "input_image": served.shown_png(x),
        "layers": [{"name": f.name, "type": f.type, "kind": f.kind, "shape": list(f.shape)} for f in result.layers],
        "feature_maps": {"layer": result.layer, "maps": result.maps,
                         "scaling": "each map on its own scale: black = its minimum, white = its maximum"},
        "gradcam": {"layer": result.cam_layer, "image": result.cam_image,
                    "about": "red = regions whose activations raise the target class's score most"},
        "notes": result.notes,
    }


def _seen(request: Request, data: bytes, invert: bool) -> Seen:
    """The image's recorded pass, from the cache when this image (and invert flag) was seen lately."""
    served = _model(request)

    def compute() -> Seen:
        x, check = served.prepare(_decode_for_model(request, data), invert)
        return Seen(x, check, served.record(x))

    return request.app.state.overviews.get(OverviewCache.key(data, invert), compute)


def _layers(request: Request, data: bytes, channels: int, layer: str | None, invert: bool) -> dict[str, Any]:
    served = _model(request)
    seen = _seen(request, data, invert)
    if layer is not None:
        return layers_reply(seen, served.classes, "", [], channels, layer)
    probs = seen.overview.probs
    return {"predictions": top_classes(probs, served.classes, 5), **input_notes(seen.check, probs),
            **layers_reply(seen, served.classes, served.shown_png(seen.x), served.channel_names(), channels, None)}


def _neuron(request: Request, data: bytes, layer: str, channel: int, row: int, col: int,
            invert: bool) -> dict[str, Any]:
    served = _model(request)
    return neuron_reply(_seen(request, data, invert), served.classes, layer, channel, row, col)


def _convolve(request: Request, data: bytes | None, fields: dict[str, Any], form: bool) -> dict[str, Any]:
    req = playground.parse_request(fields, form)
    if data is not None:
        img = decode_image(data, request.app.state.max_pixels, draft=(req.size, req.size))
        image = playground.photo_tensor(img, req.size)
        source = "upload"
    else:
        name = fields.get("image") or "sample"
        image = playground.sample_photo(name, req.size)
        source = name
    out = playground.convolve(image, req)
    out["input"]["source"] = source
    return out


def _kernel_list() -> list[dict[str, Any]]:
    from cnnlab.conv.kernels import get_kernel, kernel_info, list_kernels

    out = []
    for name in list_kernels():
        k = get_kernel(name)
        if k.dim() == 2 and k.shape[0] == k.shape[1] and k.shape[0] in playground.KERNEL_SIZES:
            out.append({"name": name, "description": kernel_info(name).description,
                        "kernel": [[round(float(v), 5) for v in row] for row in k]})
    return out

