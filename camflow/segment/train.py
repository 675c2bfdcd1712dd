"""Training the segmentation model on pseudo masks (scoring it: ``camflow.segment.infer``).

Items are (image [3, H, W] prepared as for the classifier, mask [H, W] uint8: 0 background, k+1
class k, 255 ignored), trained with the dense-training recipe of ``camflow.train.dense`` and
DeepLabV3's weight decay 1e-4; cross-entropy skips 255. Epochs (20) and rate (0.01 for the
backbone, ten times that for the head) are set for camflow's small images, not tuned; the val
split only scores the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camflow.postprocess.masks import IGNORE
from camflow.train.dense import DenseTraining, PixelItems, fit_dense

__all__ = ["MaskItems", "SegTraining", "fit_segmenter"]


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
