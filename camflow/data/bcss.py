"""BCSS-WSSS (breast cancer tissue, 4 classes) to a manifest.

Layout under ``root``::

    train/<name>+<index>[abcd].png    image-level labels in the file name: a..d are 0/1 flags
                                      for TUM, STR, LYM, NEC in that order
    val/img/<name>.png, val/mask/<name>.png     pixel labels (palette indices 0..3 = the
    test/img/<name>.png, test/mask/<name>.png   classes, 4 = white background / exclude)

The val/test masks are converted to the manifest convention (k+1 for class k, index 4 becomes
255 "ignore", as the tissue classes cover every annotated pixel) and written under ``mask_out``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from camflow import storage
from camflow.data.images import BadImageError, image_size
from camflow.data.manifest import join_under, make_manifest, root_uri
from camflow.data.masks import IGNORE, encode_mask_png, load_mask
from camflow.data.rejects import Rejects
from camflow.data.validate import label_problem

__all__ = ["BCSS_CLASSES", "BCSS_EXCLUDE", "parse_bcss_name", "read_bcss"]

BCSS_CLASSES: tuple[str, ...] = ("TUM", "STR", "LYM", "NEC")
BCSS_EXCLUDE = 4  # palette index of "white background or exclude" in val/test masks
READ_STAGE = "read"
_NAME = re.compile(r"^(?P<stem>.+?)\[(?P<flags>[^\]]*)\]$")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class _Reject(Exception):
    pass


def parse_bcss_name(filename: str) -> tuple[str, list[int]]:
    """(image_id, labels) from ``name+idx[1010].png``; ValueError naming the file if malformed."""
    stem = posixpath.splitext(posixpath.basename(filename))[0]
    match = _NAME.match(stem)
    if not match:
        raise ValueError(f"file name {filename!r} carries no [abcd] label flags")
    flags = match["flags"]
    if len(flags) != len(BCSS_CLASSES) or set(flags) - {"0", "1"}:
        raise ValueError(
            f"file name {filename!r}: label flags {flags!r} must be {len(BCSS_CLASSES)} digits 0/1 "
            f"for {', '.join(BCSS_CLASSES)}"
        )
    return match["stem"], [k for k, flag in enumerate(flags) if flag == "1"]


def _image_files(fs, folder: str) -> list[str]:
    if not fs.isdir(folder):
        raise FileNotFoundError(f"BCSS-WSSS folder not found: {storage.redact(folder)}")
    return sorted(
        posixpath.basename(p)
        for p in fs.ls(folder, detail=False)
        if p.lower().endswith(_IMAGE_SUFFIXES)
    )


def _convert_mask(mask: np.ndarray) -> np.ndarray:
    bad = sorted(int(v) for v in np.unique(mask) if v > BCSS_EXCLUDE and v != IGNORE)
    if bad:
        raise _Reject(f"mask value(s) {bad} out of range for {len(BCSS_CLASSES)} classes")
    out = mask.astype(np.uint8) + 1
    out[(mask == BCSS_EXCLUDE) | (mask == IGNORE)] = IGNORE
    return out


def _labelled_row(base: str, split: str, name: str, so) -> dict[str, Any]:
    try:
        image_id, labels = parse_bcss_name(name)
    except ValueError as exc:
        raise _Reject(str(exc)) from exc
    problem = label_problem(labels, len(BCSS_CLASSES))
    if problem:
        raise _Reject(problem)
    uri = join_under(base, f"{split}/{name}")
    try:
        width, height = image_size(uri, so)
    except BadImageError as exc:
        raise _Reject(str(exc)) from exc
    return {
        "image_id": image_id,
        "uri": uri,
        "split": split,
        "labels": labels,
        "width": width,
        "height": height,
    }


def _masked_row(base: str, split: str, name: str, mask_out: str | None, so) -> dict[str, Any]:
    image_id = posixpath.splitext(name)[0]
    uri = join_under(base, f"{split}/img/{name}")
    source_mask = join_under(base, f"{split}/mask/{image_id}.png")
    try:
        width, height = image_size(uri, so)
        mask = load_mask(source_mask, so)
    except BadImageError as exc:
        raise _Reject(str(exc)) from exc
    if mask.shape != (height, width):
        raise _Reject(
            f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the image size "
            f"{width}x{height}"
        )
    converted = _convert_mask(mask)
    labels = sorted(int(v) - 1 for v in np.unique(converted) if v != IGNORE)
    problem = label_problem(labels, len(BCSS_CLASSES))
    if problem:
        raise _Reject(problem)
    mask_uri = None
    if mask_out is not None:
        mask_uri = join_under(mask_out, f"{split}/{image_id}.png")
        storage.write_bytes(encode_mask_png(converted), mask_uri, storage_options=so)
    return {
        "image_id": image_id,
        "uri": uri,
        "split": split,
        "labels": labels,
        "width": width,
        "height": height,
        "mask_uri": mask_uri,
    }


def read_bcss(
    root: str | os.PathLike,
    split: str = "train",
    *,
    mask_out: str | os.PathLike | None = None,
    rejects: Rejects | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Manifest of one BCSS-WSSS split (``train`` from file names; ``val``/``test`` from masks).

    For val/test, labels are the classes present in each mask; with ``mask_out`` (a folder URI)
    the masks are also written there in the manifest convention and ``mask_uri`` points at them.
    Bad records (malformed name, empty label set, unreadable image or mask, size mismatch,
    duplicate id) go to ``rejects``.
    """
    rejects = Rejects() if rejects is None else rejects
    base = root_uri(root)
    out = root_uri(mask_out) if mask_out is not None else None
    fs, base_path = storage.resolve(base, storage_options)
    labelled = split in ("train", "training")
    folder = posixpath.join(base_path, split if labelled else f"{split}/img")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in _image_files(fs, folder):
        relative = f"{split}/{name}" if labelled else f"{split}/img/{name}"
        try:
            row = (
                _labelled_row(base, split, name, storage_options)
                if labelled
                else _masked_row(base, split, name, out, storage_options)
            )
        except _Reject as exc:
            rejects.add(
                posixpath.splitext(name)[0], storage.join(base, relative), READ_STAGE, str(exc)
            )
            continue
        if row["image_id"] in seen:
            rejects.add(
                row["image_id"], row["uri"], READ_STAGE, f"duplicate image_id {row['image_id']!r}"
            )
            continue
        seen.add(row["image_id"])
        rows.append(row)
    return make_manifest(rows, classes=BCSS_CLASSES)
