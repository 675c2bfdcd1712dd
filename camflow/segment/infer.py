"""How the segmentation model labels an image: DeepLabV3's inference, its class probabilities
averaged over rescaled and mirrored copies of the image.

DeepLabV3 (Chen et al. 2017) reports its val results with inputs at scales 0.5 to 1.75 in steps
of 0.25 and their left-right flips; those are the defaults here, taken from the paper, not tuned.
``SegInference.single()`` is the plain one-pass prediction. The averaging is over softmax
probabilities at the prepared input's size; the mean is then resized to the size asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from camflow.metrics.seg import SegConfusion

__all__ = ["DEEPLAB_SCALES", "SegInference", "class_probabilities", "predict", "score_segmenter"]

DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True)
class SegInference:
    scales: tuple[float, ...] = DEEPLAB_SCALES
    flip: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or any(not s > 0 for s in self.scales):
            raise ValueError(f"inference scales must be positive and at least one, got "
                             f"{self.scales}")

    @classmethod
    def single(cls) -> SegInference:
        """One pass at the prepared size, no flip."""
        return cls(scales=(1.0,), flip=False)


@torch.no_grad()
def class_probabilities(model: nn.Module, images: torch.Tensor,
                        inference: SegInference = SegInference()) -> torch.Tensor:
    """Mean class probabilities [B, L, h, w] of prepared images [B, 3, h, w] over the scales
    (and their flips) of ``inference``; every copy of the batch goes through in one pass."""
    model.eval()
    size = tuple(images.shape[-2:])
    total = None
    for scale in inference.scales:
        scaled = images if scale == 1.0 else F.interpolate(
            images, size=tuple(max(1, round(n * scale)) for n in size), mode="bilinear",
            align_corners=False)
        batch = torch.cat([scaled, scaled.flip(-1)]) if inference.flip else scaled
        logits = model(batch)["out"]
        if inference.flip:
            logits = torch.cat([logits[:len(images)], logits[len(images):].flip(-1)])
        probs = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(1)
        probs = probs.view(-1, len(images), *probs.shape[1:]).sum(0)  # an image and its flip
        total = probs if total is None else total + probs
    return total / (len(inference.scales) * (2 if inference.flip else 1))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, size: tuple[int, int] | None = None,
            inference: SegInference = SegInference()) -> torch.Tensor:
    """Label maps [B, H, W] (uint8) of prepared images [B, 3, h, w], at ``size`` if given."""
    probs = class_probabilities(model, images, inference)
    if size is not None and tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    return probs.argmax(dim=1).to(torch.uint8)


@torch.no_grad()
def score_segmenter(model: nn.Module, images: Sequence[torch.Tensor],
                    truths: Sequence[torch.Tensor], ids: Sequence[str], *,
                    inference: SegInference = SegInference(), batch_size: int = 16,
                    device: torch.device | None = None) -> dict:
    """mIoU and per-label IoU of the model's predictions against true masks (any sizes: each
    prediction is resized to its mask), with one SegConfusion."""
    device = device or torch.device("cpu")
    model.to(device)
    confusion = SegConfusion(model.spec["num_labels"])
    for start in range(0, len(images), batch_size):
        probs = class_probabilities(
            model, torch.stack(list(images[start:start + batch_size])).to(device), inference)
        for i, truth in enumerate(truths[start:start + batch_size]):
            pred = F.interpolate(probs[i:i + 1], size=tuple(truth.shape[-2:]), mode="bilinear",
                                 align_corners=False).argmax(dim=1)[0]
            confusion.update(pred.cpu()[None], truth[None], image_ids=[ids[start + i]])
    return confusion.compute()
