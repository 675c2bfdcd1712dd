"""Globally pooled multi-stage features: what BroadCAM's BLS is fitted on.

``pooled_features`` reads the named layers' maps in one no-grad forward (through the CAM engine's
``capture`` hooks), ReLUs them as the ``broadcam`` CAM method does, global-average-pools them and
concatenates them in the order given. ``accumulate`` streams a dataset through it into a
:class:`camflow.bls.BLS` accumulator: the features are never kept, only their sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn

from camflow import storage
from camflow.bls import BLS
from camflow.bls.stats import invalid_label_rows, nonfinite_rows
from camflow.cams.hooks import capture
from camflow.data.rejects import Rejects

__all__ = [
    "DEFAULT_LAYERS",
    "FeatureSink",
    "accumulate",
    "default_layers",
    "feature_tables",
    "refit_from_features",
    "pooled_by_layer",
    "pooled_features",
]

#: Called by ``accumulate`` with the image ids, per-layer pooled features and multi-hot labels of
#: the rows it kept.
FeatureSink = Callable[[list[str], dict[str, Tensor], np.ndarray], None]

#: The last two stages, BroadCAM's default, for camflow.models classifiers.
DEFAULT_LAYERS = ("stage4", "stage5")
_TORCHVISION_RESNET_LAYERS = ("layer3", "layer4")
REJECT_STAGE = "features"


def default_layers(model: nn.Module) -> tuple[str, ...]:
    """The last two stages of ``model``: stage4/stage5 (camflow.models) or layer3/layer4."""
    names = {name for name, _ in model.named_modules()}
    for candidate in (DEFAULT_LAYERS, _TORCHVISION_RESNET_LAYERS):
        if all(layer in names for layer in candidate):
            return candidate
    raise ValueError(f"layers: {type(model).__name__} has neither {list(DEFAULT_LAYERS)} nor "
                     f"{list(_TORCHVISION_RESNET_LAYERS)}; name the layers to pool")


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def pooled_by_layer(
    model: nn.Module, images: Tensor, layers: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """``{layer: [B, C_layer]}``: GAP of each layer's ReLU'd output, float32, in ``layers`` order.

    The model runs in eval mode (batch-norm statistics untouched) and its mode is restored after.
    """
    layers = tuple(default_layers(model) if layers is None else layers)
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected a [B, 3, H, W] tensor, got {shape}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, layers) as cap:
            model(images.to(_device_of(model)))
    finally:
        model.train(was_training)
    pooled = {}
    for name in layers:
        if name not in cap.activations:
            raise RuntimeError(f"layer {name!r} did not run in the forward pass")
        maps = cap.activations[name]
        if maps.dim() != 4:
            raise ValueError(f"layer {name!r} gives a tensor of shape {list(maps.shape)}; pooled "
                             "features need [B, C, h, w] feature maps")
        pooled[name] = maps.float().relu().mean(dim=(2, 3))
    return pooled


def pooled_features(
    model: nn.Module, images: Tensor, layers: Sequence[str] | None = None
) -> Tensor:
    """``[B, D]``: the pooled features of ``layers`` concatenated in order (D = sum of channels).

    This is the layout ``camflow.cams.compute(..., method="broadcam", layers=layers)`` splits the
    BLS weights by.
    """
    return torch.cat(list(pooled_by_layer(model, images, layers).values()), dim=1)


def _unpack(batch: Any, index: int) -> tuple[Tensor, Any, list[str]]:
    if isinstance(batch, Mapping):
        images = batch.get("images", batch.get("image"))
        labels = batch.get("labels")
        ids = batch.get("image_ids", batch.get("image_id"))
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        images, labels = batch[0], batch[1]
        ids = batch[2] if len(batch) == 3 else None
    else:
        raise ValueError(f"batch {index}: expected (images, labels[, image_ids]) or a mapping "
                         f"with images/labels[/image_ids], got {type(batch).__name__}")
    if images is None or labels is None:
        raise ValueError(f"batch {index}: needs both images and labels")
    n = len(images)
    ids = [f"batch{index}:{i}" for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"batch {index}: {len(ids)} image ids for {n} images")
    return images, labels, ids


def accumulate(
    model: nn.Module,
    batches: Iterable[Any],
    layers: Sequence[str] | None = None,
    bls: BLS | None = None,
    *,
    rejects: Rejects | None = None,
    sink: FeatureSink | None = None,
) -> BLS:
    """Add the pooled features of every batch to ``bls`` (a new ``BLS()`` by default); unsolved.

    ``batches`` yields ``(images, multi_hot_labels)`` or ``(images, labels, image_ids)`` (or a
    mapping with those keys). Rows whose features are not finite or whose labels are not 0/1 are
    reported to ``rejects`` (and logged) by image id, and the rest of the batch goes on.
    Features are summed on the model's device, so a GPU model also reduces them on the GPU.
    ``sink``, if given, also receives each batch's accepted features (e.g. to write them out).
    """
    layers = tuple(default_layers(model) if layers is None else layers)
    bls = BLS() if bls is None else bls
    rejects = Rejects() if rejects is None else rejects
    for index, batch in enumerate(batches):
        images, labels, ids = _unpack(batch, index)
        by_layer = pooled_by_layer(model, images, layers)
        layout = [(name, int(t.shape[1])) for name, t in by_layer.items()]
        if bls.feature_layout is None:
            bls.feature_layout = layout
        elif list(bls.feature_layout) != layout:
            raise ValueError(f"batch {index}: feature layout {layout} differs from the "
                             f"accumulator's {bls.feature_layout}")
        features = torch.cat(list(by_layer.values()), dim=1)
        labels = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
        if labels.ndim != 2 or labels.shape[0] != len(ids):
            raise ValueError(f"batch {index}: labels of shape {labels.shape} for {len(ids)} images;"
                             " expected a [B, num_classes] multi-hot matrix")
        bad_features = set(nonfinite_rows(features).tolist())
        bad_labels = set(invalid_label_rows(labels).tolist())
        for row in sorted(bad_features | bad_labels):
            reason = ("non-finite pooled features" if row in bad_features
                      else f"labels not multi-hot: {labels[row].tolist()}")
            rejects.add(ids[row], "", REJECT_STAGE, reason)
        keep = np.setdiff1d(np.arange(len(ids)), sorted(bad_features | bad_labels))
        if keep.size == 0:
            continue
        kept_ids = [ids[i] for i in keep]
        if keep.size < len(ids):
            rows = torch.from_numpy(keep).to(features.device)
            features, labels = features[rows], labels[keep]
            by_layer = {name: t[rows] for name, t in by_layer.items()}
        bls.partial_fit(features, labels, ids=kept_ids)
        if sink is not None:
            sink(kept_ids, by_layer, labels)
    return bls


def feature_tables(
    image_ids: Sequence[str], by_layer: Mapping[str, Tensor], labels: np.ndarray
) -> dict[str, pa.Table]:
    """One ``features`` table per layer: image_id, stage, vector (fixed_size_list<float32>),
    labels (list<int16> class ids, as in the manifest, so a refit needs nothing else).

    A fixed-size list has one width per column, and layers differ in width, so each layer gets
    its own table (stored under its own ``stage=<layer>`` folder).
    """
    class_ids = pa.array([np.flatnonzero(row).tolist() for row in np.asarray(labels)],
                         pa.list_(pa.int16()))
    tables = {}
    for name, values in by_layer.items():
        array = values.detach().float().cpu().numpy()
        if array.ndim != 2 or array.shape[0] != len(image_ids):
            raise ValueError(f"layer {name!r}: {list(array.shape)} features for {len(image_ids)} "
                             "image ids")
        width = array.shape[1]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), width)
        tables[name] = pa.table({
            "image_id": pa.array(list(image_ids), pa.string()),
            "stage": pa.array([name] * len(image_ids), pa.string()),
            "vector": vectors,
            "labels": class_ids,
        })
    return tables


def _vectors(table: pa.Table, where: str) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"{where}: column 'vector' is {column.type}, not a fixed-size list")
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def _multi_hot(labels: pa.ChunkedArray, num_classes: int, where: str) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    for row, ids in enumerate(labels.to_pylist()):
        ids = ids or []
        if any(not 0 <= k < num_classes for k in ids):
            raise ValueError(f"{where}: row {row} has label ids {ids} outside 0..{num_classes - 1}")
        out[row, ids] = 1.0
    return out


def refit_from_features(
    features_uri: str,
    layers: Sequence[str],
    num_classes: int,
    bls: BLS | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> BLS:
    """Accumulate the features written under ``features_uri`` (``stage=<layer>/<shard>.parquet``)
    into ``bls`` (a new ``BLS()`` by default), shard by shard; unsolved, like ``accumulate``.

    Every layer must have the same shard files holding the same image ids.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("layers: give at least one layer")
    bls = BLS() if bls is None else bls
    fs, root = storage.resolve(features_uri, storage_options)
    shard_files = sorted(fs.glob(f"{root.rstrip('/')}/stage={layers[0]}/*.parquet"))
    if not shard_files:
        raise FileNotFoundError(f"no feature shards for layer {layers[0]!r} under "
                                f"{storage.redact(features_uri)}")
    for shard_file in shard_files:
        shard = shard_file.rsplit("/", 1)[-1]
        blocks, layout, ids, labels = [], [], None, None
        for layer in layers:
            uri = storage.join(features_uri, f"stage={layer}", shard)
            table = storage.read_table(uri, storage_options=storage_options)
            where = f"features {storage.redact(uri)}"
            table_ids = table.column("image_id").to_pylist()
            if ids is None:
                ids, labels = table_ids, _multi_hot(table.column("labels"), num_classes, where)
            elif table_ids != ids:
                raise ValueError(f"{where}: image ids differ from layer {layers[0]!r}'s")
            blocks.append(_vectors(table, where))
            layout.append((layer, blocks[-1].shape[1]))
        if bls.feature_layout is None:
            bls.feature_layout = layout
        elif list(bls.feature_layout) != layout:
            raise ValueError(f"shard {shard}: feature layout {layout} differs from "
                             f"{bls.feature_layout}")
        bls.partial_fit(np.hstack(blocks), labels, ids=ids)
    return bls
