"""Record checks shared by the readers and the full manifest validation.

Readers run the cheap checks (labels, paths, headers) while they build rows;
:func:`validate_manifest` runs everything, decoding each image and mask, before a run trusts a
manifest. A rejected record goes to the ``Rejects`` collector with its reason and the rest goes on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from camflow.data.images import BadImageError, load_rgb
from camflow.data.manifest import MANIFEST_SCHEMA, PathEscapeError, is_inside, join_under
from camflow.data.masks import IGNORE, load_mask
from camflow.data.rejects import Rejects
from camflow.storage import redact

__all__ = [
    "VALIDATE_STAGE",
    "box_problem",
    "check_record",
    "label_problem",
    "resolve_record_uri",
    "validate_manifest",
]

VALIDATE_STAGE = "validate"


def label_problem(labels: Sequence[int] | None, num_classes: int) -> str | None:
    """Why a label set is unusable (empty, or an id outside 0..num_classes-1), else None."""
    if labels is None or len(labels) == 0:
        return "empty label set (an image needs at least one class label)"
    bad = sorted({int(k) for k in labels if not 0 <= int(k) < num_classes})
    if bad:
        return f"label id(s) {bad} out of range for {num_classes} classes (0..{num_classes - 1})"
    return None


def box_problem(
    boxes: Sequence[Mapping[str, Any]] | None, width: int, height: int, num_classes: int
) -> str | None:
    """Why a box list is unusable (class out of range, empty or outside the image), else None."""
    for box in boxes or ():
        k, x0, y0, x1, y1 = (box[n] for n in ("class_id", "x0", "y0", "x1", "y1"))
        if not 0 <= k < num_classes:
            return f"box class id {k} out of range for {num_classes} classes"
        coords = (x0, y0, x1, y1)
        if not all(math.isfinite(c) for c in coords) or x1 <= x0 or y1 <= y0:
            return f"degenerate box {coords}"
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            return f"box {coords} lies outside the {width}x{height} image"
    return None


def resolve_record_uri(uri: str, root: str | os.PathLike | None) -> str:
    """The URI to open: relative URIs join ``root``; PathEscapeError if outside ``root``."""
    if root is None:
        return uri
    is_absolute = "://" in uri or os.path.isabs(uri)
    if not is_absolute:
        return join_under(root, uri)
    if not is_inside(uri, root):
        raise PathEscapeError(f"uri {redact(uri)} lies outside the dataset root {redact(root)}")
    return uri


def check_record(
    record: Mapping[str, Any],
    *,
    num_classes: int,
    root: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str | None:
    """Why one manifest row is unusable, or None. Decodes the image and the mask fully."""
    problem = label_problem(record.get("labels"), num_classes)
    if problem:
        return problem
    try:
        uri = resolve_record_uri(record["uri"], root)
        mask_uri = record.get("mask_uri")
        if mask_uri is not None:
            mask_uri = resolve_record_uri(mask_uri, root)
    except PathEscapeError as exc:
        return str(exc)
    try:
        image = load_rgb(uri, storage_options)
    except BadImageError as exc:
        return str(exc)
    declared = (record.get("width"), record.get("height"))
    if declared != image.size:
        return f"manifest says {declared[0]}x{declared[1]} but the image decodes to {image.size[0]}x{image.size[1]}"
    problem = box_problem(record.get("boxes"), image.width, image.height, num_classes)
    if problem:
        return problem
    if mask_uri is not None:
        try:
            mask = load_mask(mask_uri, storage_options)
        except BadImageError as exc:
            return f"mask: {exc}"
        if mask.shape != (image.height, image.width):
            return (
                f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the image size "
                f"{image.width}x{image.height}"
            )
        return mask_value_problem(mask, num_classes)
    return None


def mask_value_problem(mask: np.ndarray, num_classes: int) -> str | None:
    """Why a label mask is unusable for ``num_classes`` classes (a value other than background
    0, class k + 1 for k < num_classes, or ignore 255), else None."""
    bad = [int(v) for v in np.unique(mask) if v != IGNORE and v > num_classes]
    if bad:
        return (f"mask value(s) {bad} out of range for {num_classes} classes "
                f"(0 background, 1..{num_classes}, {IGNORE} ignore)")
    return None


def validate_manifest(
    manifest: pa.Table,
    *,
    num_classes: int,
    rejects: Rejects,
    root: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The rows of ``manifest`` that pass every check; each other row goes to ``rejects``.

    Checks: image exists and decodes completely, non-zero size matching width/height, labels
    non-empty and in range, boxes inside the image, mask decodes with the image's size and valid
    values, image_id unique (the first occurrence is kept), uri (and mask_uri) inside ``root``.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    missing = [n for n in MANIFEST_SCHEMA.names if n not in manifest.column_names]
    if missing:
        raise ValueError(f"manifest lacks the column(s) {missing}")
    seen: set[str] = set()
    keep: list[int] = []
    for index, record in enumerate(manifest.to_pylist()):
        image_id = record["image_id"]
        if image_id in seen:
            rejects.add(image_id, record["uri"], VALIDATE_STAGE, f"duplicate image_id {image_id!r}")
            continue
        seen.add(image_id)
        problem = check_record(
            record, num_classes=num_classes, root=root, storage_options=storage_options
        )
        if problem:
            rejects.add(image_id, record["uri"], VALIDATE_STAGE, problem)
            continue
        keep.append(index)
    return manifest.take(pa.array(keep, pa.int64()))
