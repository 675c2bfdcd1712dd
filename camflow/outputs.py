"""The output tables of CAM generation and the seed quantisation.

- ``seeds``: one row per accepted image and class: the class map, max-normalised to [0, 1],
  stored as uint8 at a stated ``stride`` (``cam_height`` x ``cam_width`` bytes, row-major).
- ``masks``: one row per image: the pseudo mask as a palette PNG (``mask_png``: its bytes and a
  file name, an Image feature for Hugging Face ``datasets``) and the thresholds used.
- ``boxes``: one row per box: class, score and pixel corners (x1, y1 exclusive).

The ``run`` and ``method`` columns are Hive partitions of the paths, not stored in the files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

SEEDS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("class_id", pa.int16()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("stride", pa.int16()),
    ("cam_height", pa.int32()),
    ("cam_width", pa.int32()),
    ("cam", pa.binary()),
    ("scales", pa.list_(pa.float32())),
])

# Hugging Face ``datasets`` reads a struct of PNG bytes and a file name as an image when the
# schema's "huggingface" metadata says the column is an Image feature; pyarrow, pandas and duckdb
# see a plain struct column.
_PNG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_MASK_FEATURES = {
    "image_id": {"dtype": "string", "_type": "Value"},
    "height": {"dtype": "int32", "_type": "Value"},
    "width": {"dtype": "int32", "_type": "Value"},
    "mask_png": {"_type": "Image"},
    "bg_threshold": {"dtype": "float32", "_type": "Value"},
    "crf": {"dtype": "bool", "_type": "Value"},
}
MASKS_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("height", pa.int32()), ("width", pa.int32()),
     ("mask_png", _PNG), ("bg_threshold", pa.float32()), ("crf", pa.bool_())],
    metadata={"huggingface": json.dumps({"info": {"features": _MASK_FEATURES}})},
)

BOXES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("class_id", pa.int16()),
    ("score", pa.float32()),
    ("x0", pa.float32()),
    ("y0", pa.float32()),
    ("x1", pa.float32()),
    ("y1", pa.float32()),
])


def quantize_seed(cams: torch.Tensor, stride: int) -> tuple[np.ndarray, int, int]:
    """[K,H,W] maps in [0,1] -> uint8 [K,h,w] with h = ceil(H/stride), area-averaged."""
    if stride < 1:
        raise ValueError(f"seed stride must be >= 1, got {stride}")
    cams = cams.detach().float()
    if cams.ndim != 3:
        raise ValueError(f"seed maps must be [K,H,W], got shape {tuple(cams.shape)}")
    height, width = cams.shape[-2:]
    h, w = math.ceil(height / stride), math.ceil(width / stride)
    small = cams if stride == 1 else F.adaptive_avg_pool2d(cams[None], (h, w))[0]
    q = torch.round(small.clamp(0, 1) * 255).to(torch.uint8)
    return q.cpu().numpy(), h, w


def dequantize_seed(row: dict, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One ``seeds`` row back to a float map in [0,1], at ``size`` (default: the image size)."""
    cam = np.frombuffer(row["cam"], dtype=np.uint8).reshape(row["cam_height"], row["cam_width"])
    out = torch.from_numpy(cam.astype(np.float32) / 255.0)[None, None]
    size = size or (row["height"], row["width"])
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out[0, 0]


def seed_rows(
    image_id: str, class_ids: Sequence[int], seeds: np.ndarray, *, size: tuple[int, int],
    stride: int, scales: Sequence[float],
) -> list[dict]:
    """The ``seeds`` rows of one image (``SEEDS_SCHEMA`` dicts): ``seeds`` is uint8 [K,h,w] from
    ``quantize_seed`` of maps at the image's ``size`` (H, W), one per class id. A shard's rows
    become one table with ``pa.Table.from_pylist``."""
    if len(class_ids) != seeds.shape[0]:
        raise ValueError(f"image {image_id!r}: {len(class_ids)} class ids for {seeds.shape[0]} maps")
    if seeds.dtype != np.uint8:
        raise ValueError(f"image {image_id!r}: seeds must be quantised uint8, got {seeds.dtype}")
    height, width = size
    h, w = seeds.shape[-2:]
    return [{"image_id": image_id, "class_id": int(c), "height": height, "width": width,
             "stride": stride, "cam_height": h, "cam_width": w, "cam": seeds[i].tobytes(),
             "scales": list(scales)}
            for i, c in enumerate(class_ids)]


def png_cell(png: bytes, image_id: str) -> dict[str, object]:
    """A ``mask_png`` value: the PNG's bytes and the file name it would have on disk."""
    return {"bytes": png, "path": f"{image_id}.png"}
