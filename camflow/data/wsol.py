"""wsolevaluation metadata (CUB, ImageNet, OpenImages30k) to a manifest.

A metadata folder (e.g. ``metadata/CUB/test``) holds, one record per line:

- ``image_ids.txt``: ``<path>`` relative to the image root (the path is the image_id);
- ``class_labels.txt``: ``<path>,<class id>``;
- ``image_sizes.txt`` (optional): ``<path>,<width>,<height>``;
- ``localization.txt`` (optional): boxes ``<path>,<x0>,<y0>,<x1>,<y1>`` (one line per box), or
  masks ``<path>,<mask path>,<ignore mask path>`` (OpenImages: one line per instance mask, the
  ignore mask on the first line only).

Boxes are kept in the metadata's pixel coordinates, clipped to the image. Instance masks are merged (union, as the
class's mask; ignore mask pixels become 255) into one manifest-convention PNG per image under
``mask_out``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from camflow import storage
from camflow.data.images import BadImageError, image_size
from camflow.data.manifest import PathEscapeError, join_under, make_manifest, root_uri
from camflow.data.masks import IGNORE, encode_mask_png, load_mask
from camflow.data.rejects import Rejects
from camflow.data.validate import box_problem, label_problem

__all__ = ["read_wsol"]

READ_STAGE = "read"


class _Reject(Exception):
    pass


def _lines(uri: str, so) -> list[list[str]]:
    with storage.open_uri(uri, "rb", storage_options=so) as f:
        text = f.read().decode("utf-8")
    return [line.strip().split(",") for line in text.splitlines() if line.strip()]


def _optional_lines(base: str, name: str, so) -> list[list[str]] | None:
    uri = storage.join(base, name)
    return _lines(uri, so) if storage.exists(uri, so) else None


def _localization(rows: list[list[str]] | None):
    """(boxes by id, masks by id, ignore mask by id, bad lines by id) from localization.txt."""
    boxes: dict[str, list[tuple[float, ...]]] = {}
    masks: dict[str, list[str]] = {}
    ignore: dict[str, str] = {}
    bad: dict[str, str] = {}
    for fields in rows or ():
        image_id = fields[0]
        if len(fields) == 5:
            try:
                boxes.setdefault(image_id, []).append(tuple(float(v) for v in fields[1:]))
            except ValueError:
                bad[image_id] = f"malformed box line {','.join(fields)!r} in localization.txt"
        elif len(fields) == 3:
            masks.setdefault(image_id, []).append(fields[1])
            if fields[2]:
                ignore[image_id] = fields[2]
        else:
            bad[image_id] = f"localization.txt line {','.join(fields)!r} has {len(fields)} fields"
    return boxes, masks, ignore, bad


def _merged_mask(
    mask_root: str, paths: list[str], ignore_path: str | None, label: int, shape, so
) -> np.ndarray:
    merged = np.zeros(shape, dtype=np.uint8)
    for path in paths:
        instance = load_mask(join_under(mask_root, path), so)
        if instance.shape != shape:
            raise _Reject(
                f"mask {path} size {instance.shape[1]}x{instance.shape[0]} differs from the "
                f"image size {shape[1]}x{shape[0]}"
            )
        merged[instance > 0] = label + 1
    if ignore_path:
        ignored = load_mask(join_under(mask_root, ignore_path), so)
        if ignored.shape != shape:
            raise _Reject(f"ignore mask {ignore_path} size differs from the image size")
        merged[ignored > 0] = IGNORE
    return merged


def read_wsol(
    metadata_dir: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    split: str | None = None,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    mask_root: str | os.PathLike | None = None,
    mask_out: str | os.PathLike | None = None,
    rejects: Rejects | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Manifest of one wsolevaluation split.

    ``split`` defaults to the metadata folder's name; ``num_classes`` (or ``classes``) enables the
    label range check (CUB 200, ImageNet 1000, OpenImages 100). Mask paths are relative to
    ``mask_root`` (default ``image_root``); merged masks are written only when ``mask_out`` is
    given. Bad records go to ``rejects``; the rest goes on.
    """
    so = storage_options
    rejects = Rejects() if rejects is None else rejects
    meta = root_uri(metadata_dir)
    images = root_uri(image_root)
    masks_base = root_uri(mask_root) if mask_root is not None else images
    out = root_uri(mask_out) if mask_out is not None else None
    split = split or posixpath.basename(meta.rstrip("/"))
    if classes is not None:
        num_classes = len(classes) if num_classes is None else num_classes
    ids = [fields[0] for fields in _lines(storage.join(meta, "image_ids.txt"), so)]
    labels: dict[str, int | str] = {}
    for fields in _lines(storage.join(meta, "class_labels.txt"), so):
        try:
            labels[fields[0]] = int(fields[1])
        except (IndexError, ValueError):
            labels[fields[0]] = f"malformed class label line {','.join(fields)!r}"
    sizes = {
        f[0]: (int(f[1]), int(f[2])) for f in _optional_lines(meta, "image_sizes.txt", so) or ()
    }
    boxes, masks, ignore, bad = _localization(_optional_lines(meta, "localization.txt", so))
    range_check = num_classes if num_classes is not None else np.iinfo(np.int16).max
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for image_id in ids:
        uri = storage.join(images, image_id)
        if image_id in seen:
            rejects.add(image_id, uri, READ_STAGE, f"duplicate image_id {image_id!r}")
            continue
        seen.add(image_id)
        try:
            rows.append(
                _row(
                    image_id,
                    split,
                    images,
                    masks_base,
                    out,
                    labels,
                    sizes,
                    boxes,
                    masks,
                    ignore,
                    bad,
                    range_check,
                    so,
                )
            )
        except _Reject as exc:
            rejects.add(image_id, uri, READ_STAGE, str(exc))
    return make_manifest(rows, classes=classes)


def _row(
    image_id,
    split,
    images,
    masks_base,
    out,
    labels,
    sizes,
    boxes,
    masks,
    ignore,
    bad,
    num_classes,
    so,
) -> dict[str, Any]:
    if image_id in bad:
        raise _Reject(bad[image_id])
    label = labels.get(image_id)
    if label is None:
        raise _Reject("no entry in class_labels.txt")
    if isinstance(label, str):
        raise _Reject(label)
    problem = label_problem([label], num_classes)
    if problem:
        raise _Reject(problem)
    try:
        uri = join_under(images, image_id)
        width, height = sizes.get(image_id) or image_size(uri, so)
    except (PathEscapeError, BadImageError) as exc:
        raise _Reject(str(exc)) from exc
    row: dict[str, Any] = {
        "image_id": image_id,
        "uri": uri,
        "split": split,
        "labels": [label],
        "width": width,
        "height": height,
    }
    if image_id in boxes:
        # Annotation tools disagree by a pixel about inclusive ends: clip to the image.
        row["boxes"] = [
            {
                "class_id": label,
                "x0": min(max(x0, 0.0), width),
                "y0": min(max(y0, 0.0), height),
                "x1": min(max(x1, 0.0), width),
                "y1": min(max(y1, 0.0), height),
            }
            for x0, y0, x1, y1 in boxes[image_id]
        ]
        problem = box_problem(row["boxes"], width, height, num_classes)
        if problem:
            raise _Reject(problem)
    if image_id in masks and out is not None:
        try:
            merged = _merged_mask(
                masks_base, masks[image_id], ignore.get(image_id), label, (height, width), so
            )
            mask_uri = join_under(out, posixpath.splitext(image_id)[0] + ".png")
        except (PathEscapeError, BadImageError) as exc:
            raise _Reject(str(exc)) from exc
        storage.write_bytes(encode_mask_png(merged), mask_uri, storage_options=so)
        row["mask_uri"] = mask_uri
    return row
