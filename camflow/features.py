"""Globally pooled multi-stage features: what BroadCAM's BLS is fitted on.

``pooled_features`` reads the named layers' maps in one no-grad forward (through the CAM engine's
``capture`` hooks), ReLUs them as the ``broadcam`` CAM method does, global-average-pools them and
concatenates them in the order given. ``accumulate`` streams a dataset through it into a
:class:`camflow.bls.BLS` accumulator: the features are never kept, only their sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camflow.bls import BLS
from camflow.bls.stats import invalid_label_rows, nonfinite_rows
from camflow.cams.hooks import capture
from camflow.data.rejects import Rejects

__all__ = ["DEFAULT_LAYERS", "accumulate", "default_layers", "pooled_by_layer", "pooled_features"]

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
) -> BLS:
    """Add the pooled features of every batch to ``bls`` (a new ``BLS()`` by default); unsolved.

    ``batches`` yields ``(images, multi_hot_labels)`` or ``(images, labels, image_ids)`` (or a
    mapping with those keys). Rows whose features are not finite or whose labels are not 0/1 are
    reported to ``rejects`` (and logged) by image id, and the rest of the batch goes on.
    Features are summed on the model's device, so a GPU model also reduces them on the GPU.
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
        if keep.size < len(ids):
            features = features[torch.from_numpy(keep).to(features.device)]
            labels = labels[keep]
        bls.partial_fit(features, labels, ids=[ids[i] for i in keep])
    return bls
