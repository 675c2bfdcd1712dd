"""Label maps as palette PNG bytes (mode "P", the PASCAL VOC palette), and back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from camflow.postprocess.validate import as_numpy

__all__ = ["VOC_PALETTE", "decode_label_png", "encode_label_png", "voc_palette"]


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, [n, 3] uint8: index bits spread over the high bits of R, G, B."""
    idx = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):  # eight bit planes, not pixels
        for ch in range(3):
            bit = (idx >> (3 * shift + ch)) & 1
            rgb[:, ch] |= bit << (7 - shift)
    return rgb.astype(np.uint8)


VOC_PALETTE = voc_palette()


def encode_label_png(label_map, *, name: str = "label_map") -> bytes:
    """PNG bytes (mode "P", VOC palette) of a [H, W] map of labels 0..255 (255 = ignore).

    Accepts a numpy array or torch tensor of any integer dtype.
    """
    arr = as_numpy(label_map, name)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty [H, W] label map, got {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"{name}: labels must lie in 0..255, got {arr.min()}..{arr.max()}")
    h, w = arr.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
    img.putpalette(VOC_PALETTE.tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_label_png(data: bytes, *, name: str = "png") -> np.ndarray:
    """The [H, W] uint8 label map stored in palette (or greyscale) PNG bytes."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises several unrelated types for corrupt data
        raise ValueError(f"{name}: not a readable PNG ({exc})") from exc
    if img.mode not in ("P", "L"):
        raise ValueError(f"{name}: expected a palette or greyscale PNG, got mode {img.mode!r}")
    return np.asarray(img, dtype=np.uint8)
