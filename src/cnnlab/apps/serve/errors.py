"""Errors the server turns into JSON responses: each carries its HTTP status and a message that says what to do."""

from __future__ import annotations

from cnnlab.errors import CnnlabError


class ServeError(CnnlabError):
    """A request the server refuses; `status` is the HTTP status code of the JSON reply."""

    status = 400


class UnsupportedMediaType(ServeError):
    """The body is not an image, nor JSON carrying one as base64."""

    status = 415


class PayloadTooLarge(ServeError):
    """The upload has too many bytes, or the image declares too many pixels."""

    status = 413


class InvalidInput(ServeError):
    """A parameter (kernel, stride, layer, class, ...) that is well-formed JSON but not a valid value."""

    status = 422


class NotFound(ServeError):
    """A position that does not exist in the output asked about (a neuron's channel, row or column; a pixel)."""

    status = 404


class NotAvailable(ServeError):
    """The served model cannot do this (e.g. feature maps of an exported ONNX model)."""

    status = 501
