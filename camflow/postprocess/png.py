"""Label maps as palette PNG bytes (mode "P", the PASCAL VOC palette), and back.

The palette and the encoding live in ``camflow.data.masks`` (the ground-truth masks use them
too); this module adds the checks a post-processing caller needs: torch or numpy input of any
integer dtype, labels within 0..255, errors naming the image.
"""

from __future__ import annotations

import numpy as np

from camflow.data.images import BadImageError
from camflow.data.masks import VOC_PALETTE as _VOC_PALETTE_FLAT
from camflow.data.masks import encode_mask_png, load_mask
from camflow.postprocess.validate import as_numpy

__all__ = ["VOC_PALETTE", "decode_label_png", "encode_label_png"]

VOC_PALETTE = np.array(_VOC_PALETTE_FLAT, dtype=np.uint8).reshape(-1, 3)


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
    return encode_mask_png(np.ascontiguousarray(arr, dtype=np.uint8))


def decode_label_png(data: bytes, *, name: str = "png") -> np.ndarray:
    """The [H, W] uint8 label map stored in palette (or greyscale) PNG bytes."""
    try:
        return load_mask(bytes(data))
    except BadImageError as exc:
        raise ValueError(f"{name}: not a readable PNG ({exc})") from exc
