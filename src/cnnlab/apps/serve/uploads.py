"""Getting an image out of a request safely: a body-size limit, the accepted media types, and a pixel limit.

Three ways to send an image, on every endpoint that takes one:
  multipart/form-data  a file part named `image` with an image/* (or application/octet-stream) type
  application/json     {"image": "<base64>"} or a data URL ("data:image/png;base64,...")
  image/*              the raw file as the body
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.apps.serve.errors import InvalidInput, PayloadTooLarge, ServeError, UnsupportedMediaType
from cnnlab.data.images import open_image

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # 10 MiB: any photo a phone takes, far below what would strain memory
# 25 megapixels: a 24 MP photo decodes (as RGB) into 75 MB; a bigger declared size is refused before decoding.
MAX_PIXELS = 25_000_000
RAW_TYPES = ("application/octet-stream",)  # what browsers and curl send for a file of unknown type


def _too_large(limit: int) -> str:
    return f"the upload is larger than the limit of {limit / 2**20:g} MiB: send a smaller image"


class BodySizeLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, judged from Content-Length before any byte is read,
    and counted while streaming when there is no Content-Length (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_UPLOAD_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, _too_large(self.max_bytes))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the endpoint's read: the app's handler for ServeError answers 413.
                    raise PayloadTooLarge(_too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # a malformed header: the server's HTTP parser rejects it before we get here
    return None


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    # Connection: close, because the unread body is still on its way and must not be taken as the next request.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Upload:
    """The image bytes of a request, and the other fields that came with it (form fields or JSON keys)."""

    data: bytes | None
    fields: dict[str, Any] = field(default_factory=dict)
    form: bool = False  # the fields came from a form: text, not JSON values


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_upload(request: Request, image_required: bool = True) -> Upload:
    """The image (bytes) and the other fields of a multipart, JSON or raw-image request; 415 for other types."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        upload = await _from_form(request)
    elif kind == "application/json" or kind.endswith("+json"):
        upload = _from_json(await request.body())
    elif kind.startswith("image/") or kind in RAW_TYPES:
        upload = Upload(await request.body())
    else:
        raise UnsupportedMediaType(
            f"unsupported media type {kind or '(none)'!r}: send the image as multipart/form-data (a file field "
            "named 'image'), as JSON {\"image\": \"<base64>\"}, or as the raw body with an image/* Content-Type")
    if image_required and upload.data is None:
        raise UnsupportedMediaType("no image in the request: send a file field named 'image' (multipart) or "
                                   "{\"image\": \"<base64>\"} (JSON)")
    if upload.data is not None and not upload.data:
        raise ServeError("the image is empty (0 bytes): send an image file")
    return upload


async def _from_form(request: Request) -> Upload:
    form = await request.form(max_files=1, max_fields=32)
    try:
        fields: dict[str, Any] = {}
        data = None
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
            elif name == "image":
                data = await _file_bytes(value)
            else:
                raise ServeError(f"unexpected file field {name!r}: send the image in a field named 'image'")
        if "image" in fields and data is None:
            data = decode_base64(fields.pop("image"), where="the 'image' form field")
        return Upload(data, fields, form=True)
    finally:
        await form.close()


async def _file_bytes(part: Any) -> bytes:
    kind = (part.content_type or "").split(";")[0].strip().lower()
    if kind and not kind.startswith("image/") and kind not in RAW_TYPES:
        raise UnsupportedMediaType(f"the 'image' part has type {kind!r}, not an image: send a PNG, JPEG, BMP, "
                                   "GIF, TIFF or WebP file")
    return await part.read()


def _from_json(body: bytes) -> Upload:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(f"the body is not valid JSON ({exc})") from None
    except RecursionError:  # nested deeper than the parser goes: no request of ours looks like that
        raise InvalidInput("the JSON body is nested too deeply: send an object like {\"kernel\": \"sobel_x\"}") \
            from None
    if not isinstance(obj, dict):
        raise ServeError("the JSON body must be an object, e.g. {\"image\": \"<base64>\"}")
    fields = dict(obj)
    if "image" not in fields:
        return Upload(None, fields)
    value = fields.pop("image")
    if not isinstance(value, str):
        raise UnsupportedMediaType("'image' must be a string: the image file as base64 (or a data URL)")
    if value == "sample" or value.startswith("sample:"):  # the playground's bundled photos go by name
        fields["image"] = value
        return Upload(None, fields)
    return Upload(decode_base64(value, where="'image'"), fields)


def decode_base64(text: str, where: str) -> bytes:
    """Standard or URL-safe base64, optionally as a data URL; 400 when it is not base64."""
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise UnsupportedMediaType(f"{where} is a data URL without base64: use data:image/...;base64,...")
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(f"{where} is not valid base64") from None


def check_pixels(data: bytes, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse (413) an image whose header declares more than `max_pixels` pixels, before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only: no pixel is decoded here
                w, h = img.size
    except Image.DecompressionBombError as exc:  # Pillow's own hard limit, far above ours
        raise PayloadTooLarge(f"refused as a decompression bomb: {exc}") from None
    except Exception:  # noqa: BLE001 - not readable as an image: open_image reports it with a clear message
        return
    if w * h > max_pixels:
        raise PayloadTooLarge(f"the image declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}: "
                              "send a smaller image")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None) -> Image.Image:
    """Bytes -> a decoded PIL image; 413 over the pixel limit, 400 (BadImageError) for non-images and truncated files.

    `draft` (H, W) lets a JPEG decode at a reduced scale that is still at least that size.
    """
    check_pixels(data, max_pixels)
    return open_image(data, max_pixels=max_pixels, draft=draft)
