"""What a schema cannot generate by itself, for schemathesis: real image files where the REST API's schema says an
image (multipart parts of an image type, raw image bodies, and base64 text of the `image-base64` format).

The suite's fuzz test imports it; `schemathesis run` from the repository root loads it through schemathesis.toml.
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP", "image/bmp": "BMP",
           "image/tiff": "TIFF"}


def encoded(fmt: str, mode: str, size: tuple[int, int], colour: int) -> bytes:
    rgba = (colour, 255 - colour, colour // 2, 255 - colour // 3)
    image = Image.new("RGBA", size, rgba).convert(mode)  # a palette image with its palette, as files have
    if fmt == "JPEG" and mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def images(fmt: str) -> st.SearchStrategy[bytes]:
    """Small decodable images of one format, in the modes users send (gray, colour, with alpha, palette), at least
    as wide and high as the playground's largest kernel (a smaller photo cannot be convolved: a 422, tested in
    test_serve.py, as are 1-pixel images for prediction)."""
    sizes = st.tuples(st.integers(5, 48), st.integers(5, 48))
    return st.builds(encoded, st.just(fmt), st.sampled_from(["L", "RGB", "RGBA", "P"]), sizes, st.integers(0, 255))


@st.composite
def base64_images(draw: st.DrawFn) -> str:
    media = draw(st.sampled_from(sorted(FORMATS)))
    text = base64.b64encode(draw(images(FORMATS[media]))).decode()
    return f"data:{media};base64,{text}" if draw(st.booleans()) else text


for media_type, fmt in FORMATS.items():
    schemathesis.openapi.media_type(media_type, images(fmt))
schemathesis.openapi.format("image-base64", base64_images())
