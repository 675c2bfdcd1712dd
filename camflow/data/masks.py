"""Label masks in the one convention every manifest ``mask_uri`` follows (PASCAL VOC's):

a single-channel PNG where 0 is background, ``k + 1`` is class ``k`` and 255 is "ignore".
Datasets that encode masks differently are converted by their reader.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from camflow.data.images import BadImageError, ImageSource, read_bytes

__all__ = [
    "BACKGROUND",
    "IGNORE",
    "VOC_PALETTE",
    "border_band",
    "encode_mask_png",
    "load_mask",
    "mask_labels",
]

BACKGROUND = 0
IGNORE = 255


def _voc_palette() -> list[int]:
    # VOC's colour map: the bits of the class index spread over the high bits of R, G and B.
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.extend((r, g, b))
    return palette


VOC_PALETTE: list[int] = _voc_palette()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Palette ("P") PNG bytes with the VOC palette; no timestamps, so equal masks give equal bytes."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be a 2-D uint8 array, got {mask.dtype} {mask.shape}")
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette(VOC_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def load_mask(source: ImageSource, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The class-index array (H x W uint8) of a mask PNG, palette or grayscale."""
    data = read_bytes(source, storage_options)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many kinds for broken files; all mean the same here.
        raise BadImageError(f"corrupt or truncated mask: {source!s:.200}: {exc}") from exc
    if image.mode not in ("P", "L"):
        raise BadImageError(
            f"mask must be a palette or grayscale PNG of class indices, got mode {image.mode}: "
            f"{source!s:.200}"
        )
    return np.asarray(image, dtype=np.uint8)


def mask_labels(mask: np.ndarray) -> list[int]:
    """Class ids (0-based) present in a mask, background and ignore excluded."""
    values = np.unique(mask)
    return [int(v) - 1 for v in values if v != BACKGROUND and v != IGNORE]


def border_band(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean band of ``2 * width`` pixels around every boundary between different instance ids.

    VOC marks object outlines as "ignore" because the true border is ambiguous; this is the same
    band, computed as the pixels whose neighbourhood holds more than one id.
    """
    size = 2 * width + 1
    upper = ndimage.maximum_filter(instances, size=size, mode="nearest")
    lower = ndimage.minimum_filter(instances, size=size, mode="nearest")
    return upper != lower
