"""Image transforms for training and evaluation: RGB PIL image -> normalised float tensor.

They plug into ``ManifestDataset(..., transform=...)``. Normalisation is camflow.data.transforms's
(the ImageNet statistics the torchvision backbones and their pretrained weights expect).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from camflow.data.transforms import MEAN, STD, Transform

__all__ = ["eval_transform", "train_transform"]


def _to_normalised_tensor() -> list:
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ]


def train_transform(
    size: int,
    *,
    min_scale: float = 0.5,
    hflip: bool = True,
    color_jitter: float = 0.3,
) -> Transform:
    """Random resized crop (area ``[min_scale, 1]``), optional flip and colour jitter."""
    steps: list = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps + _to_normalised_tensor())


def eval_transform(size: int) -> Transform:
    """Deterministic: the whole image resized to ``size x size``."""
    return v2.Compose([v2.Resize((size, size), antialias=True), *_to_normalised_tensor()])
