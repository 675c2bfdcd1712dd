"""ImageNet normalisation and the default image-to-tensor transform, defined once for camflow."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

__all__ = ["MEAN", "STD", "Transform", "denormalize", "normalize", "resize_to_tensor", "to_tensor"]

MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Transform = Callable[[Image.Image], torch.Tensor]


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if like.ndim < 3 or like.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W] images, got shape {tuple(like.shape)}")
    shape = (3, 1, 1)
    mean = torch.tensor(MEAN, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(STD, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in 0..1 to ImageNet-normalised values."""
    mean, std = _stats(images)
    return (images - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize` (values back in 0..1, not clipped)."""
    mean, std = _stats(images)
    return images * std + mean


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image to float32 [3, H, W] in 0..1."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_to_tensor(size: int | tuple[int, int]) -> Transform:
    """The default transform: bilinear resize to ``size`` (int: square; (h, w)), then normalise."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")

    def transform(image: Image.Image) -> torch.Tensor:
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return normalize(to_tensor(image))

    return transform
