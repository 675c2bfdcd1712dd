"""One shard of the refinement stage: its manifest records and stored seeds in, a
``refined_masks`` table (the ``masks`` schema) and its mask-metric state out.

An image whose seeds are missing (generation rejected it) or whose record does not decode becomes
a ``rejects`` row naming it; the rest of the shard goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
from PIL import Image

from camflow.data.transforms import ImagePrep
from camflow.generate import decode_records
from camflow.metrics.seg import SegConfusion
from camflow.outputs import MASKS_SCHEMA, png_cell
from camflow.postprocess.png import encode_label_png
from camflow.refine.affinity import AffinityNet
from camflow.refine.masks import RefineOptions
from camflow.refine.seeds import refine_masks, seed_maps

__all__ = ["REFINED_TABLE", "RefinedShard", "refine_shard"]

REFINED_TABLE = "refined_masks"


@dataclass
class RefinedShard:
    masks: pa.Table
    confusion: SegConfusion
    rejects: list[dict[str, str]] = field(default_factory=list)


def refine_shard(records: Sequence[Mapping[str, Any]], seeds: Sequence[Mapping[str, Any]],
                 net: AffinityNet, prep: ImagePrep, num_classes: int, options: RefineOptions,
                 *, power: float = 1.0, storage_options: Mapping[str, Any] | None = None,
                 device: torch.device | None = None) -> RefinedShard:
    """Refined pseudo masks of the shard's images, at each image's own size; the seeds are
    raised to ``power`` (``seed_power``) first."""
    device = device or torch.device("cpu")
    images, rejects = decode_records(records, num_classes=num_classes,
                                     storage_options=storage_options)
    by_image: dict[str, list[Mapping[str, Any]]] = {}
    for row in seeds:
        by_image.setdefault(str(row["image_id"]), []).append(row)
    confusion = SegConfusion(num_classes + 1)
    rows = []
    for im in images:
        own = by_image.get(im.image_id)
        if not own:
            rejects.append({"image_id": im.image_id, "uri": "", "stage": "refine",
                            "reason": "no seeds (rejected by generation)"})
            continue
        size = im.pixels.shape[:2]
        classes, maps = seed_maps(own, size)
        if sorted(classes.tolist()) != sorted(im.labels):
            rejects.append({"image_id": im.image_id, "uri": "", "stage": "refine",
                            "reason": f"seeds of classes {classes.tolist()}, labels {im.labels}"})
            continue
        batch = prep(Image.fromarray(im.pixels))[None].to(device)
        (mask,) = refine_masks(net, batch, [maps], [classes], options, [im.image_id],
                               power=power)
        if im.gt_mask is not None:
            confusion.update(mask[None], im.gt_mask[None], image_ids=[im.image_id])
        rows.append({"image_id": im.image_id, "height": size[0], "width": size[1],
                     "mask_png": png_cell(encode_label_png(mask, name=im.image_id), im.image_id),
                     "bg_threshold": options.mask_bg_threshold, "crf": False})
    return RefinedShard(pa.Table.from_pylist(rows, schema=MASKS_SCHEMA), confusion, rejects)
