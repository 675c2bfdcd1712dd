"""A torch Dataset over a manifest: decode (local or s3:// via fsspec), resize, normalise."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import torch
from torch.utils.data import Dataset

from camflow.data.images import BadImageError, load_rgb
from camflow.data.manifest import read_manifest
from camflow.data.transforms import MEAN, STD, ImagePrep, Transform, denormalize, normalize
from camflow.data.validate import resolve_record_uri, validate_manifest

__all__ = [
    "MEAN",
    "STD",
    "ManifestDataset",
    "denormalize",
    "multi_hot",
    "normalize",
    "validate_manifest",
]


def multi_hot(labels: list[int], num_classes: int) -> torch.Tensor:
    """float32 [num_classes] with ones at ``labels``."""
    target = torch.zeros(num_classes, dtype=torch.float32)
    if labels:
        target[torch.as_tensor(labels, dtype=torch.long)] = 1.0
    return target


class ManifestDataset(Dataset):
    """Items ``{"image": [3,H,W] float32 normalised, "labels": [C] multi-hot, "index", "image_id"}``.

    ``manifest`` is a manifest table or the URI of its Parquet file. ``transform`` receives the
    RGB PIL image and returns the normalised tensor (augmentations plug in here); by default the
    image is resized to ``size`` and normalised. Relative URIs resolve under ``root``. Run
    :func:`validate_manifest` first: a bad record here raises BadImageError naming the image.
    """

    def __init__(
        self,
        manifest: pa.Table | str | os.PathLike,
        num_classes: int,
        *,
        size: int | tuple[int, int] = 224,
        transform: Transform | None = None,
        root: str | os.PathLike | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(manifest, pa.Table):
            manifest = read_manifest(os.fspath(manifest), storage_options=storage_options)
        missing = [n for n in ("image_id", "uri", "labels") if n not in manifest.column_names]
        if missing:
            raise ValueError(f"manifest lacks the column(s) {missing}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        # Arrow columns, not Python lists: cheap to share with forked DataLoader workers.
        self._ids = manifest.column("image_id").combine_chunks()
        self._uris = manifest.column("uri").combine_chunks()
        self._labels = manifest.column("labels").combine_chunks()
        self.num_classes = int(num_classes)
        self.transform = transform if transform is not None else ImagePrep(size)
        self.root = root
        self.storage_options = dict(storage_options) if storage_options else None

    def __len__(self) -> int:
        return len(self._ids)

    def labels(self, index: int) -> list[int]:
        return [int(k) for k in self._labels[index].as_py() or ()]

    def image_id(self, index: int) -> str:
        return str(self._ids[index].as_py())

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        image_id = self._ids[index].as_py()
        uri = resolve_record_uri(self._uris[index].as_py(), self.root)
        try:
            image = load_rgb(uri, self.storage_options)
        except BadImageError as exc:
            raise BadImageError(f"image {image_id!r}: {exc}") from exc
        labels = self.labels(index)
        bad = [k for k in labels if not 0 <= k < self.num_classes]
        if bad:
            raise ValueError(f"image {image_id!r}: label id(s) {bad} out of range")
        return {
            "image": self.transform(image),
            "labels": multi_hot(labels, self.num_classes),
            "index": index,
            "image_id": image_id,
        }
