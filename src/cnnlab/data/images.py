"""Reading any image file (any format, mode, bit depth or size) into a uint8 tensor the pipeline can use."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError

ImageLike = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, torch.Tensor]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}

# Truncated files must fail loudly, never be half-decoded into a silently wrong training image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(CnnlabError):
    """A file that is not a readable image (corrupt, truncated, not an image, too large): "name: reason", and the
    `reason` alone, for lists of bad files by path."""

    def __init__(self, name: object, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason

    def __reduce__(self):  # raised in a worker process, it comes back whole
        return type(self), (self.name, self.reason)


def open_image(
    source: ImageLike | Path, max_pixels: int | None = None, draft: tuple[int, int] | None = None
) -> Image.Image:
    """Open and fully decode an image from a path, bytes or PIL image, turned as its EXIF orientation says (a phone
    photo taken upright comes out upright); corrupt input raises BadImageError.

    `max_pixels` is the limit for input from others (the server's uploads): over it, or over Pillow's own
    decompression-bomb threshold, the image is refused before decoding. Without it (your own files) only Pillow's
    hard limit applies, so a 10000x10000 photo opens. `draft` (H, W) lets JPEG decode at a reduced scale that is
    still at least that size: much faster on photos (`img.info["source_size"]` keeps the stored (width, height)
    then).
    """
    if isinstance(source, Image.Image):
        return source
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with _as_bad_image(name), warnings.catch_warnings():
        warnings.simplefilter("error" if max_pixels is not None else "ignore", Image.DecompressionBombWarning)
        img = Image.open(fp)
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            raise BadImageError(name, f"{w}x{h} pixels is over the limit of {max_pixels:,}")
        if draft is not None and img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.info["source_size"] = (w, h)  # the size as stored, before the reduced decode
            img.draft(img.mode, (draft[1], draft[0]))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    return img


def read_header(path: str | os.PathLike) -> tuple[bool, int, int]:
    """(single channel, H, W) of an image file as it decodes upright, read from its header alone (no pixel is
    decoded: a truncated file passes, and fails when it is decoded); BadImageError for what is not an image."""
    return peek_image(path)[0]


def peek_image(path: str | os.PathLike, decode_below: int = 0) -> tuple[tuple[bool, int, int], Small | None]:
    """read_header's answer, and for a gray or RGB image of fewer than `decode_below` pixels its pixels, decoded as
    `open_image` decodes them without a draft (for a small file, opening it costs more than decoding it: a scan
    that keeps them spares the decode a second open). None for a larger image or another mode, or one whose pixels
    fail to decode (its decode then fails too, and says so)."""
    with _as_bad_image(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:  # leaving the block closes the file, and keeps what was decoded
            w, h = img.size
            # PNG's getexif() decodes every pixel to look for an eXIf chunk after them too: the header's only
            # (where writers put it), else the scan costs a full decode (benchmarks/README.md, issue 29).
            exif = img.getexif() if img.format != "PNG" or "exif" in img.info else {}
            turned = exif.get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that turn it a quarter
            header = is_single_channel(img), (w if turned else h), (h if turned else w)
            if w * h >= decode_below or img.mode not in ("L", "RGB"):
                return header, None
            try:
                img.load()
            except (OSError, SyntaxError, ValueError):
                return header, None
            ImageOps.exif_transpose(img, in_place=True)
            return header, (np.asarray(img), img.format, (w, h))


def peek_files(paths: list[str], decode_below: int = 0) -> list[tuple[tuple[bool, int, int], Small | None] | str]:
    """`peek_image` over many files: for each, its answer, or for what is not an image the reason, as a string. (A
    module-level function: worker processes run it.)"""
    out: list[tuple[tuple[bool, int, int], Small | None] | str] = []
    for path in paths:
        try:
            out.append(peek_image(path, decode_below))
        except BadImageError as exc:
            out.append(exc.reason)
    return out


# A small image decoded by a scan (`peek_image`): its pixels upright, (H, W) or (H, W, 3) uint8; its file's format;
# its size as stored, (width, height). A plain tuple of an array, a string and ints, which the garbage collector
# stops tracking: a NamedTuple or a PIL image per file of a folder it would walk on every collection.
Small = tuple[np.ndarray, str | None, tuple[int, int]]


def small_to_array(small: Small, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    """What `image_to_array(open_image(path, draft=size), channels, size)` gives for a file `peek_image` kept, or
    None where that decodes a JPEG at a reduced scale (then only a second open gives its pixels)."""
    px, fmt, (w, h) = small
    if fmt == "JPEG" and min(w // size[1], h // size[0]) >= 2:
        return None
    if px.shape[:2] == tuple(size) and (px.ndim == 2) == (channels == 1):
        return px[:, :, None] if px.ndim == 2 else px
    return image_to_array(Image.fromarray(px), channels, size)


@contextmanager
def _as_bad_image(name: object) -> Iterator[None]:
    """What goes wrong reading the image `name` (missing, a folder, not an image, a bomb, corrupt) as one
    BadImageError line."""
    try:
        yield
    except FileNotFoundError:
        raise BadImageError(name, "no such file") from None
    except IsADirectoryError:
        raise BadImageError(name, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise BadImageError(name, "not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(name, f"refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(name, f"corrupt or truncated image ({exc})") from None


def to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode as an 8-bit "L" (channels=1) or "RGB" (channels=3) image (`img` itself when it is one)."""
    if img.mode == ("L" if channels == 1 else "RGB"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # Deep images: scale by the range of their type, so a 16-bit white is 255 and 8-bit data in "I" stays.
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "F":
            top = 1.0 if arr.max() <= 1.0 else float(arr.max())
        else:
            top = 255.0 if arr.max() <= 255 else 65535.0 if arr.max() <= 65535 else float(arr.max())
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, as a viewer shows them, rather than the black they often store.
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def is_single_channel(img: Image.Image) -> bool:
    """True for gray modes (1, L, LA, I, I;16, F)."""
    return img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith("I;16")


def image_to_tensor(img: Image.Image, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A PIL image as a (C, H, W) uint8 tensor, squashed to `size` (H, W) with an antialiased resize."""
    # torch's permute copy, not numpy's transpose copy: with the latter, a streamed folder of photos decoded in two
    # threads fell from ~1,200 to ~820 images/s (benchmarks/README.md, issue 29).
    return torch.from_numpy(image_to_array(img, channels, size).copy()).permute(2, 0, 1).contiguous()


def image_to_array(img: Image.Image, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A PIL image as an (H, W, C) uint8 array (read-only: it may share the image's memory), squashed to `size`
    (H, W) with an antialiased resize."""
    img = to_8bit(img, channels)
    if size is not None and img.size != (size[1], size[0]):
        # reducing_gap: big photos are first shrunk by an integer factor (fast), then resampled (smooth).
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr


def to_pil(source: ImageLike, draft: tuple[int, int] | None = None) -> Image.Image:
    """Any image source (path, bytes, PIL image, HxW / HxWxC array, CxHxW tensor) as a decoded PIL image."""
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3:
            raise CnnlabError(f"an image tensor must be (C, H, W) or (H, W), got shape {tuple(source.shape)}")
        if t.dtype.is_floating_point:  # floats are taken to be in [0, 1]
            t = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        source = Image.fromarray(t.permute(1, 2, 0).squeeze(-1).numpy().astype(np.uint8))
    elif isinstance(source, np.ndarray):
        a = source
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8) if a.dtype.kind == "f" else a.astype(np.uint8)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim not in (2, 3):
            raise CnnlabError(f"an image array must be (H, W) or (H, W, C), got shape {source.shape}")
        source = Image.fromarray(a)
    return open_image(source, draft=draft)


def load_image(source: ImageLike, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Any image source (path, bytes, PIL image, HxW / HxWxC array, CxHxW tensor) as a (C, H, W) uint8 tensor."""
    return image_to_tensor(to_pil(source, draft=size), channels, size)


def has_colour(img: Image.Image, threshold: float = 0.02) -> bool:
    """Whether an image's channels differ (a colour photo), not merely gray stored as RGB."""
    if is_single_channel(img) or img.mode == "1":
        return False
    small = np.asarray(to_8bit(img, 3).resize((64, 64), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return float(np.abs(small - small.mean(axis=2, keepdims=True)).mean()) > threshold


def list_image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Files under `folder` (recursively, hidden ones ignored): (likely images, other files)."""
    images, others = [], []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if not path.is_file() and not (path.is_symlink() and not path.exists()):  # a dangling link is a bad file
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return images, others
