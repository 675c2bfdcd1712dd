"""Image transforms for training and evaluation: RGB PIL image -> normalised float tensor.

They plug into ``ManifestDataset(..., transform=...)``. Normalisation is camflow.data.transforms's
(the ImageNet statistics the torchvision backbones and their pretrained weights expect).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from camflow.data.transforms import MEAN, STD, ImagePrep, Transform

__all__ = ["ColourJitter", "eval_transform", "train_transform"]


def _to_normalised_tensor(*middle) -> list:
    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), *middle,
            v2.Normalize(MEAN, STD)]


_GREY = torch.tensor([0.299, 0.587, 0.114])


class ColourJitter(torch.nn.Module):
    """Random brightness, contrast and saturation of a float image in [0, 1].

    Each factor is uniform in ``[1 - strength, 1 + strength]``, applied in that order, with
    torchvision's formulas (contrast blends with the mean grey level, saturation with the grey
    image), composed into one 3 x 3 colour transform and clamped once at the end. torchvision's
    ColorJitter on a PIL image cost 0.9 ms of the 1.25 ms an augmented image took at 48 px; one
    matrix product costs a few hundredths of that, which matters on a CPU.
    """

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.strength = float(strength)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, c, s = (1 + (torch.rand(3) * 2 - 1) * self.strength).tolist()
        # saturation: S = s I + (1 - s) 1 g^T, with S 1 = 1; then out = c b S x + (1 - c) b m.
        matrix = torch.eye(3) * s + (1 - s) * _GREY.expand(3, 3)
        mean_grey = float(torch.tensordot(_GREY, image, dims=1).mean())
        flat = image.reshape(3, -1)
        out = torch.addmm(torch.full((3, 1), (1 - c) * b * mean_grey), matrix * (c * b), flat)
        return out.clamp_(0, 1).reshape(image.shape)


def train_transform(
    size: int,
    *,
    min_scale: float = 0.5,
    hflip: bool = True,
    color_jitter: float = 0.3,
) -> Transform:
    """Random resized crop (area ``[min_scale, 1]``), optional flip and colour jitter
    (:class:`ColourJitter`)."""
    steps: list = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    jitter = [ColourJitter(color_jitter)] if color_jitter > 0 else []
    return v2.Compose(steps + _to_normalised_tensor(*jitter))


def eval_transform(size: int) -> ImagePrep:
    """Deterministic: the whole image resized to ``size x size``, exactly as BLS features and CAMs
    prepare it (``camflow.data.transforms.ImagePrep``)."""
    return ImagePrep(size)
