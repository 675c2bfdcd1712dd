"""What the training loop needs from a dataset: labels, ids, subsets, loaders that survive bad images.

Any map-style dataset whose items are dicts with ``"image"`` (float [3, H, W]) and ``"labels"``
(float [C] multi-hot) works. Datasets exposing ``labels`` ([N, C]) and ``image_ids`` attributes are
read without decoding images; others are iterated once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

__all__ = [
    "RobustItems",
    "collate_skipping_rejects",
    "data_hash",
    "dataset_image_ids",
    "dataset_labels",
    "manifest_datasets",
    "select_subset",
]

log = logging.getLogger("camflow.train")


def _base(dataset: Dataset) -> tuple[Dataset, np.ndarray | None]:
    """The innermost dataset and the index map through any torch Subsets around it."""
    indices = None
    while isinstance(dataset, Subset):
        local = np.asarray(dataset.indices, dtype=np.int64)
        indices = local if indices is None else local[indices]
        dataset = dataset.dataset
    return dataset, indices


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """[N, C] multi-hot labels of every item, without decoding images where the dataset allows.

    Understands an array attribute ``labels`` ([N, C]) and ManifestDataset's ``labels(i)`` (class
    ids of item i, with ``num_classes``); otherwise every item is loaded once.
    """
    base, indices = _base(dataset)
    labels = getattr(base, "labels", None)
    if callable(labels) and isinstance(getattr(base, "num_classes", None), int):
        table = np.zeros((len(base), base.num_classes), dtype=np.float32)
        for i in range(len(base)) if indices is None else np.unique(indices):
            ids = [k for k in labels(int(i)) if 0 <= k < base.num_classes]
            table[i, ids] = 1.0
        return table[indices] if indices is not None else table
    if labels is not None and not callable(labels):
        labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
        return labels[indices] if indices is not None else labels
    return np.stack([np.asarray(dataset[i]["labels"]) for i in range(len(dataset))])


def dataset_image_ids(dataset: Dataset) -> list[str] | None:
    """Image ids from an ``image_ids`` attribute or an ``image_id(i)`` method; None otherwise."""
    base, indices = _base(dataset)
    ids = getattr(base, "image_ids", None)
    if callable(ids):
        ids = None
    if ids is None and callable(getattr(base, "image_id", None)):
        wanted = range(len(base)) if indices is None else indices
        return [str(base.image_id(int(i))) for i in wanted]
    if ids is None:
        return None
    ids = [str(i) for i in ids]
    return [ids[i] for i in indices] if indices is not None else ids


def data_hash(labels: np.ndarray, image_ids: Sequence[str] | None) -> str:
    """A fingerprint of exactly which images (and labels) a model was trained on."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    digest.update(str(labels.shape).encode())
    for image_id in image_ids or ():
        digest.update(image_id.encode() + b"\0")
    return digest.hexdigest()[:16]


def select_subset(labels: np.ndarray, proportion: float, seed: int, *,
                  image_ids: Sequence[str] | None = None, what: str = "training set") -> np.ndarray:
    """Indices of the label-stratified ``proportion`` subset; raises when it would be empty.

    With ``image_ids`` the subset is keyed by them, so it is the same one that
    ``camflow.data.subsets.take_subset`` picks from the manifest (BroadCAM's BLS is fitted on
    exactly the images the classifier was trained on); without, by row position.
    """
    n = len(labels)
    if n == 0:
        raise ValueError(f"the {what} is empty: nothing to train on")
    if proportion >= 1.0:
        return np.arange(n)
    import pyarrow as pa

    from camflow.data.subsets import stratified_subset

    class_ids = [np.flatnonzero(row > 0.5).tolist() for row in labels]
    keyed = class_ids if image_ids is None else pa.table(
        {"labels": class_ids, "image_id": [str(i) for i in image_ids]})
    indices = np.asarray(stratified_subset(keyed, proportion, seed=seed), dtype=np.int64)
    if indices.size == 0:
        raise ValueError(
            f"proportion {proportion:g} of the {what} ({n} images) selects no image; "
            "use a larger proportion or more data"
        )
    return np.sort(indices)


class RobustItems(Dataset):
    """Turns an item that fails to load into a reject record instead of killing the epoch."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except (OSError, ValueError, RuntimeError) as err:
            ids = dataset_image_ids(self.dataset)
            image_id = ids[index] if ids else f"index {index}"
            return {"rejected": f"{type(err).__name__}: {err}", "image_id": image_id}


def collate_skipping_rejects(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collation of good items; rejects travel along in ``batch["rejects"]``."""
    good = [i for i in items if "rejected" not in i]
    rejects = [(str(i["image_id"]), i["rejected"]) for i in items if "rejected" in i]
    batch = {"image": default_collate([i["image"] for i in good]),
             "labels": default_collate([i["labels"] for i in good])} if good else {}
    batch["rejects"] = rejects
    return batch


def manifest_datasets(
    train_manifest,
    val_manifest,
    num_classes: int,
    *,
    image_size: int,
    min_scale: float = 0.5,
    hflip: bool = True,
    color_jitter: float = 0.3,
    root: str | None = None,
    storage_options: dict[str, Any] | None = None,
):
    """ManifestDatasets for training (augmented) and validation (resized only)."""
    from camflow.data.dataset import ManifestDataset
    from camflow.train.augment import eval_transform, train_transform

    augment = train_transform(image_size, min_scale=min_scale, hflip=hflip, color_jitter=color_jitter)
    common = {"root": root, "storage_options": storage_options, "size": image_size}
    return (
        ManifestDataset(train_manifest, num_classes, transform=augment, **common),
        ManifestDataset(val_manifest, num_classes, transform=eval_transform(image_size), **common),
    )
