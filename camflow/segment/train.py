"""Training the segmentation model on pseudo masks, and scoring it on true masks.

Items are (image [3, H, W] prepared as for the classifier, mask [H, W] uint8: 0 background, k+1
class k, 255 ignored), trained with the dense-training recipe of ``camflow.train.dense`` and
DeepLabV3's weight decay 1e-4; cross-entropy skips 255. Epochs (20) and rate (0.01 for the
backbone, ten times that for the head) are set for camflow's small images, not tuned; the val
split only scores the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camflow.metrics.seg import SegConfusion
from camflow.postprocess.masks import IGNORE
from camflow.train.dense import DenseTraining, PixelItems, fit_dense

__all__ = ["MaskItems", "SegTraining", "fit_segmenter", "predict", "score_segmenter"]


@dataclass(frozen=True)
class SegTraining(DenseTraining):
    epochs: int = 20
    batch_size: int = 16
    weight_decay: float = 1e-4


MaskItems = PixelItems  # (image, pseudo mask) pairs


def fit_segmenter(model: nn.Module, items: PixelItems, config: SegTraining = SegTraining(),
                  device: torch.device | None = None, **distributed: Any) -> list[float]:
    """Train ``model`` (torchvision's DeepLabV3 interface) in place; mean loss per epoch.
    ``distributed``: ``prepare_model`` / ``prepare_loader`` of ``fit_dense`` (Ray Train's)."""
    def loss(module: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # A mean over the labelled pixels that is 0 (not NaN) when a batch has none.
        total = F.cross_entropy(module(images)["out"], masks.long(), ignore_index=IGNORE,
                                reduction="sum")
        return total / (masks != IGNORE).sum().clamp(min=1)

    return fit_dense(model, items, config, loss, backbone=model.backbone.parameters(),
                     head=model.classifier.parameters(), device=device, name="segmentation",
                     **distributed)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, size: tuple[int, int] | None = None
            ) -> torch.Tensor:
    """Label maps [B, H, W] (uint8) of prepared images [B, 3, h, w], at ``size`` if given."""
    model.eval()
    logits = model(images)["out"]
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.argmax(dim=1).to(torch.uint8)


@torch.no_grad()
def score_segmenter(model: nn.Module, images: Sequence[torch.Tensor],
                    truths: Sequence[torch.Tensor], ids: Sequence[str], *, batch_size: int = 16,
                    device: torch.device | None = None) -> dict:
    """mIoU and per-label IoU of the model's predictions against true masks (any sizes: each
    prediction is resized to its mask), with one SegConfusion."""
    device = device or torch.device("cpu")
    model.to(device)
    num_labels = model.spec["num_labels"]
    confusion = SegConfusion(num_labels)
    for start in range(0, len(images), batch_size):
        batch = torch.stack(list(images[start:start + batch_size])).to(device)
        logits = model(batch)["out"]
        for i, truth in enumerate(truths[start:start + batch_size]):
            pred = F.interpolate(logits[i:i + 1], size=tuple(truth.shape[-2:]), mode="bilinear",
                                 align_corners=False).argmax(dim=1)[0]
            confusion.update(pred.cpu()[None], truth[None], image_ids=[ids[start + i]])
    return confusion.compute()
