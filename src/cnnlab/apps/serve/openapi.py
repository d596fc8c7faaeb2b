"""What the REST API accepts, stated in its OpenAPI schema exactly as the server enforces it: the request bodies
(an image file, or base64 text of one; the playground's kernel and settings, as JSON values or as a form's text)
and the choices that depend on the served model (its layers, its classes, whether a mirror keeps its labels).

A request the schema allows is served; one it forbids is refused with a 4xx. The one thing a schema cannot check
is that bytes decode as an image: `format: binary` parts say their image types in `encoding`, and base64 text
says it with the `image-base64` format (a client or fuzzer sends real image files there; anything else is a 400).
"""

from __future__ import annotations

from typing import Any

from cnnlab.apps.serve import playground
from cnnlab.conv.images import SAMPLE_PHOTOS

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
IMAGE_FILE = {"type": "string", "format": "binary", "description": "an image file: " + ", ".join(IMAGE_TYPES)}
IMAGE_BASE64 = {"type": "string", "format": "image-base64",
                "description": "an image file (PNG, JPEG, GIF, WebP, BMP, TIFF) as base64, or as a data URL "
                               "(data:image/png;base64,...)"}
IMAGE_PART_ENCODING = {"image": {"contentType": ", ".join(IMAGE_TYPES)}}

IMAGE_BODY = {
    "description": "The image: a multipart file field `image`, JSON {\"image\": \"<base64 or data URL>\"}, or the "
                   "raw file with an image/* Content-Type.",
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": IMAGE_FILE}},
                                "encoding": IMAGE_PART_ENCODING},
        "application/json": {"schema": {"type": "object", "required": ["image"],
                                        "properties": {"image": IMAGE_BASE64}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _number_grid(n: int) -> dict[str, Any]:
    weight = {"type": "number", "minimum": -playground.MAX_WEIGHT, "maximum": playground.MAX_WEIGHT}
    row = {"type": "array", "items": weight, "minItems": n, "maxItems": n}
    return {"type": "array", "items": row, "minItems": n, "maxItems": n, "description": f"a {n}x{n} grid of weights, "
            "row by row"}


KERNEL_NAME = {"type": "string", "pattern": playground.KERNEL_NAME_PATTERN,
               "description": "a named kernel: identity, sharpen, sobel_x, sobel_y, prewitt_x, prewitt_y, emboss, "
                              "outline, box_blur[:n=3|5], gaussian[:n=3|5][,sigma=S], laplacian[:neighbours=4|8]",
               "example": "sobel_x"}
KERNEL_SCHEMA = {"oneOf": [_number_grid(n) for n in playground.KERNEL_SIZES] + [KERNEL_NAME]}
SAMPLES = ["sample", *(f"sample:{name}" for name in SAMPLE_PHOTOS)]

CONVOLVE_FIELDS = {
    "kernel": {**KERNEL_SCHEMA, "default": playground.DEFAULT_KERNEL},
    "stride": {"type": "integer", "minimum": playground.STRIDES.start, "maximum": playground.STRIDES.stop - 1,
               "default": 1},
    "padding": {"type": "integer", "minimum": playground.PADDINGS.start, "maximum": playground.PADDINGS.stop - 1,
                "default": 0},
    "mode": {"type": "string", "enum": list(playground.MODES), "default": "gray",
             "description": "gray: luma, one map; rgb: each channel on its own; summed: channels added (a conv layer)"},
    "size": {"type": "integer", "minimum": playground.SIZES.start, "maximum": playground.SIZES.stop - 1,
             "default": playground.DEFAULT_SIZE, "description": "the photo is shrunk so its longer side is at most this"},
    "pixel": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2,
              "description": "[row, column] of an output pixel whose multiply-and-sum to show (404 outside the "
                             "output)"},
    "include_input": {"type": "boolean", "default": True},
}
FORM_FIELDS = {  # the same settings as a form's text
    "kernel": {"type": "string", "pattern": playground.KERNEL_TEXT_PATTERN, "default": playground.DEFAULT_KERNEL,
               "description": "a kernel name, or the kernel as JSON text, e.g. [[0,1,0],[1,-4,1],[0,1,0]]"},
    **{name: {"type": "string", "pattern": pattern, "description": f"{name}, as text"}
       for name, pattern in playground.FORM_PATTERNS.items()},
    "mode": CONVOLVE_FIELDS["mode"],
    "include_input": {"type": "string", "enum": list(playground.FORM_BOOLEANS)},
}
CONVOLVE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {
            "image": {"anyOf": [{"type": "string", "enum": SAMPLES}, IMAGE_BASE64], "default": "sample",
                      "description": "a photo bundled with scikit-learn (" + ", ".join(SAMPLES) + "), or an image "
                                     "as base64"},
            **CONVOLVE_FIELDS}}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": IMAGE_FILE, **FORM_FIELDS}}, "encoding": IMAGE_PART_ENCODING},
    },
}


def choices(values: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A query parameter's allowed values, for its schema (`json_schema_extra`); none known: any string."""
    return {"enum": list(values)} if values else {}
