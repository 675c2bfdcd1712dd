"""Decoding any image source into 8-bit RGB, with one clear error type for bad input.

Standalone on purpose: the Ray CAM workers decode with the same function as the readers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from camflow.storage import open_uri, redact

__all__ = ["BadImageError", "ImageSource", "image_size", "load_rgb", "read_bytes", "to_rgb"]

ImageSource = str | os.PathLike | bytes | bytearray | memoryview


class BadImageError(ValueError):
    """The image is missing, empty, corrupt, truncated or of an unusable kind."""


def _name(source: ImageSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return redact(os.fspath(source))


def read_bytes(source: ImageSource, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """All bytes of a path / fsspec URI (or the bytes themselves); BadImageError if unreadable."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            with open_uri(os.fspath(source), "rb", storage_options=storage_options) as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BadImageError(f"image file not found: {_name(source)}") from exc
        except OSError as exc:
            raise BadImageError(f"cannot read image {_name(source)}: {exc}") from exc
    if not data:
        raise BadImageError(f"zero-size image file: {_name(source)}")
    return data


def _open(data: bytes | IO[bytes], name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except UnidentifiedImageError as exc:
        raise BadImageError(f"not a decodable image (corrupt or unknown format): {name}") from exc
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image too large to decode safely: {name}: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"corrupt image header: {name}: {exc}") from exc
    if image.width <= 0 or image.height <= 0:
        raise BadImageError(f"zero-size image ({image.width}x{image.height}): {name}")
    return image


def image_size(
    source: ImageSource, storage_options: Mapping[str, Any] | None = None
) -> tuple[int, int]:
    """(width, height) from the header only: cheap, but does not prove the pixels decode."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open(read_bytes(source), _name(source)).size
    name = _name(source)
    try:
        with open_uri(os.fspath(source), "rb", storage_options=storage_options) as f:
            if not f.read(1):
                raise BadImageError(f"zero-size image file: {name}")
            f.seek(0)
            # PIL reads only as far as the header here; the pixels stay undecoded.
            return _open(f, name).size
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise BadImageError(f"image file not found: {name}") from exc
    except BadImageError:
        raise
    except OSError as exc:
        raise BadImageError(f"cannot read image {name}: {exc}") from exc


def _scale_to_uint8(array: np.ndarray, full_scale: float) -> np.ndarray:
    scaled = np.clip(array.astype(np.float64), 0, full_scale) * (255.0 / full_scale)
    return np.round(scaled).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode.

    Grayscale is replicated, palette images are expanded, alpha is composited onto black (the
    pixels under full transparency are undefined, black makes the result independent of them),
    16-bit and 32-bit integer images are scaled from 0..65535, float images from 0..1.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image)
        return Image.fromarray(_scale_to_uint8(array, 65535.0), mode="L").convert("RGB")
    if mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return Image.fromarray(_scale_to_uint8(array, 1.0), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(source: ImageSource, storage_options: Mapping[str, Any] | None = None) -> Image.Image:
    """Fully decoded 8-bit RGB image from a path, an fsspec URI (s3://...) or encoded bytes.

    Raises BadImageError (a ValueError) naming the source for a missing, empty, corrupt or
    truncated file. Multi-frame files give their first frame; EXIF orientation is not applied
    (masks and boxes are drawn on the stored pixel grid).
    """
    name = _name(source)
    image = _open(read_bytes(source, storage_options), name)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL says "image file is truncated" (JPEG) or "broken data stream" (PNG) here.
        raise BadImageError(f"corrupt or truncated image data: {name}: {exc}") from exc
    return to_rgb(image)
