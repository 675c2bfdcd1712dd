"""PASCAL VOC 2012 (and the embedded benchmark, which uses its layout) to a manifest.

Layout under ``root`` (local path or fsspec URI)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png        palette PNG, 0 background, k+1 class k, 255 void
    SegmentationClassAug/<id>.png     SBD-augmented masks (grayscale), same values
    Annotations/<id>.xml              objects with names and 1-based boxes
    ImageSets/Segmentation/<split>.txt one id per line, or "<image path> <mask path>" pairs
    classes.json                      optional class names (else VOC's 20)
"""

from __future__ import annotations

import json
import os
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa

from camflow import storage
from camflow.data.images import BadImageError, image_size
from camflow.data.manifest import PathEscapeError, join_under, make_manifest, root_uri
from camflow.data.masks import load_mask, mask_labels
from camflow.data.rejects import Rejects
from camflow.data.validate import label_problem

__all__ = ["LIST_LOCATIONS", "READ_STAGE", "VOC_CLASSES", "read_voc", "voc_classes"]

READ_STAGE = "read"

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# Where split lists live in VOC 2012 and in the usual SBD "train_aug" setups.
LIST_LOCATIONS = (
    "ImageSets/Segmentation/{split}.txt",
    "ImageSets/SegmentationAug/{split}.txt",
    "{split}.txt",
)
MASK_FOLDERS = ("SegmentationClass", "SegmentationClassAug")


class _Reject(Exception):
    """One record cannot become a row; carries the reason for the rejects table."""


def _read_text(uri: str, storage_options: Mapping[str, Any] | None) -> str:
    with storage.open_uri(uri, "rb", storage_options=storage_options) as f:
        return f.read().decode("utf-8")


def voc_classes(
    root: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """Class names from ``root/classes.json`` (a list, or {"classes": [...]}), else VOC's 20."""
    uri = storage.join(root_uri(root), "classes.json")
    if not storage.exists(uri, storage_options):
        return VOC_CLASSES
    data = json.loads(_read_text(uri, storage_options))
    names = data["classes"] if isinstance(data, dict) else data
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{uri}: expected a non-empty list of class names")
    return tuple(names)


def _list_uri(base: str, split: str, storage_options: Mapping[str, Any] | None) -> str:
    tried = [storage.join(base, pattern.format(split=split)) for pattern in LIST_LOCATIONS]
    for uri in tried:
        if storage.exists(uri, storage_options):
            return uri
    raise FileNotFoundError(
        f"no list file for split {split!r}; looked for {[storage.redact(u) for u in tried]}"
    )


def _entries(text: str) -> list[tuple[str, str, str | None]]:
    """(image_id, image path, mask path or None) per non-empty line, paths relative to root."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) == 1:
            image_id = parts[0]
            entries.append((image_id, f"JPEGImages/{image_id}.jpg", None))
        else:
            # DeepLab-style pair lists write "/JPEGImages/x.jpg /SegmentationClassAug/x.png".
            image_path, mask_path = parts[0].lstrip("/"), parts[1].lstrip("/")
            image_id = posixpath.splitext(posixpath.basename(image_path))[0]
            entries.append((image_id, image_path, mask_path))
    return entries


def _xml_objects(
    uri: str, classes: Sequence[str], storage_options: Mapping[str, Any] | None
) -> tuple[list[int], list[dict[str, float]]]:
    try:
        tree = ET.fromstring(_read_text(uri, storage_options))
    except ET.ParseError as exc:
        raise _Reject(f"annotation XML does not parse: {exc}") from exc
    labels, boxes = [], []
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise _Reject(f"annotation names unknown class {name!r}")
        k = classes.index(name)
        labels.append(k)
        box = obj.find("bndbox")
        if box is not None:
            try:
                xmin, ymin, xmax, ymax = (
                    float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")
                )
            except (TypeError, ValueError) as exc:
                raise _Reject(f"annotation has a malformed bndbox: {exc}") from exc
            # VOC boxes are 1-based and inclusive; the manifest uses pixel edges.
            boxes.append({"class_id": k, "x0": xmin - 1, "y0": ymin - 1, "x1": xmax, "y1": ymax})
    return labels, boxes


def _find_mask(base: str, image_id: str, storage_options: Mapping[str, Any] | None) -> str | None:
    for folder in MASK_FOLDERS:
        uri = join_under(base, f"{folder}/{image_id}.png")
        if storage.exists(uri, storage_options):
            return uri
    return None


def _row(
    base: str,
    split: str,
    entry: tuple[str, str, str | None],
    classes: Sequence[str],
    labels_from: str,
    storage_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    image_id, image_path, mask_path = entry
    try:
        uri = join_under(base, image_path)
        mask_uri = (
            join_under(base, mask_path)
            if mask_path
            else _find_mask(base, image_id, storage_options)
        )
        xml_uri = join_under(base, f"Annotations/{image_id}.xml")
    except PathEscapeError as exc:
        raise _Reject(str(exc)) from exc
    try:
        width, height = image_size(uri, storage_options)
    except BadImageError as exc:
        raise _Reject(str(exc)) from exc
    xml_labels, boxes = (
        _xml_objects(xml_uri, classes, storage_options)
        if storage.exists(xml_uri, storage_options)
        else (None, None)
    )
    if mask_uri is not None and not storage.exists(mask_uri, storage_options):
        raise _Reject(f"mask file not found: {storage.redact(mask_uri)}")
    if labels_from == "mask":
        if mask_uri is None:
            raise _Reject(f"no mask in {list(MASK_FOLDERS)} to take labels from")
        try:
            mask = load_mask(mask_uri, storage_options)
        except BadImageError as exc:
            raise _Reject(f"mask: {exc}") from exc
        if mask.shape != (height, width):
            raise _Reject(
                f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the image size "
                f"{width}x{height}"
            )
        labels = mask_labels(mask)
    else:
        if xml_labels is None:
            raise _Reject(f"annotation file not found: {storage.redact(xml_uri)}")
        labels = xml_labels
    problem = label_problem(labels, len(classes))
    if problem:
        raise _Reject(problem)
    return {
        "image_id": image_id,
        "uri": uri,
        "split": split,
        "labels": sorted(set(labels)),
        "width": width,
        "height": height,
        "mask_uri": mask_uri,
        "boxes": boxes,
    }


def read_voc(
    root: str | os.PathLike,
    split: str = "train",
    *,
    labels_from: Literal["mask", "xml"] = "mask",
    classes: Sequence[str] | None = None,
    rejects: Rejects | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Manifest of one VOC split (``train``, ``val``, ``trainval``, ``train_aug``, ...).

    Labels come from the segmentation masks (``labels_from="mask"``, VOC's WSSS convention) or
    from the XML objects (``"xml"``); boxes come from the XML when it exists. Records that cannot
    be read (missing or unreadable image or mask, size mismatch, unknown or out-of-range labels,
    empty label set, duplicate id, path outside ``root``) go to ``rejects`` and are skipped.
    """
    if labels_from not in ("mask", "xml"):
        raise ValueError(f"labels_from must be 'mask' or 'xml', got {labels_from!r}")
    rejects = Rejects() if rejects is None else rejects
    base = root_uri(root)
    classes = tuple(classes) if classes is not None else voc_classes(base, storage_options)
    list_uri = _list_uri(base, split, storage_options)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in _entries(_read_text(list_uri, storage_options)):
        image_id, image_path = entry[0], entry[1]
        if image_id in seen:
            rejects.add(
                image_id,
                storage.join(base, image_path),
                READ_STAGE,
                f"duplicate image_id {image_id!r}",
            )
            continue
        seen.add(image_id)
        try:
            rows.append(_row(base, split, entry, classes, labels_from, storage_options))
        except _Reject as exc:
            rejects.add(image_id, storage.join(base, image_path), READ_STAGE, str(exc))
    return make_manifest(rows, classes=classes)
