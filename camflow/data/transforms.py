"""ImageNet normalisation and ``ImagePrep``, the one way camflow turns an image into model input.

Training evaluation, BLS features and CAMs all call the same ``ImagePrep``; a trained model carries
its own (``model.image_prep``, recorded in its checkpoint), so the BLS is fitted on exactly the
inputs whose CAMs later use its weights. Only training augmentation differs, by design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["MEAN", "STD", "ImagePrep", "Transform", "denormalize", "normalize", "to_tensor"]

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


@dataclass(frozen=True, init=False)
class ImagePrep:
    """Whole image -> bilinear resize to ``size`` (antialiased when shrinking) -> ImageNet
    normalisation: float32 ``[3, h, w]``.

    Like torchvision's ``weights.transforms()`` it is a value that travels with the model: a
    checkpoint records it (``to_dict``) and the loaded model carries it as ``model.image_prep``.
    It takes a PIL image, a uint8 ``[H, W, 3]`` array or a float ``[3, H, W]`` tensor in 0..1.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __init__(
        self,
        size: int | tuple[int, int],
        mean: tuple[float, float, float] = MEAN,
        std: tuple[float, float, float] = STD,
    ) -> None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        object.__setattr__(self, "size", (int(height), int(width)))
        object.__setattr__(self, "mean", tuple(float(v) for v in mean))
        object.__setattr__(self, "std", tuple(float(v) for v in std))

    def __call__(self, image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        x = _unit_tensor(image)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                              antialias=True)[0]
        mean = torch.tensor(self.mean, dtype=x.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "resize": "bilinear-antialias"}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ImagePrep:
        if doc.get("resize", "bilinear-antialias") != "bilinear-antialias":
            raise ValueError(f"image_prep: unknown resize {doc.get('resize')!r}")
        return cls(tuple(doc["size"]), tuple(doc["mean"]), tuple(doc["std"]))


def _unit_tensor(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return to_tensor(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
        # torch shares the array's memory: a read-only one (as Ray hands them over) is copied.
        array = np.require(image, requirements=["C", "W"])
        return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
        return image.float()
    raise ValueError(f"expected a PIL image, uint8 [H, W, 3] array or [3, H, W] tensor, "
                     f"got {type(image).__name__}")
