"""Classifier heads on the last stage map: GAP, TAP and ReCAM's extra classifier.

Every head ends in a 1x1 ``nn.Conv2d`` with bias named ``classifier`` and maps ``[B, K, h, w]``
features to ``[B, C]`` logits. Because the pooling happens *before* that 1x1 conv, its weights are
exactly the CAM weights: ``relu(conv1x1(A))`` is the class activation map (Zhou et al. 2016).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HEADS",
    "ClassifierHead",
    "GlobalAvgPool",
    "ThresholdedAvgPool",
    "make_head",
    "recam_loss",
]

HEADS = ("gap", "tap", "recam")

# Bae et al. ("Rethinking CAM") use 0.1 in won-bae/rethinkingCAM configs (avgpool_threshold).
TAP_DEFAULT_TAU = 0.1


class GlobalAvgPool(nn.Module):
    """Mean over all spatial positions, keeping a 1x1 map."""

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return feature.mean(dim=(2, 3), keepdim=True)


class ThresholdedAvgPool(nn.Module):
    """Thresholded average pooling (TAP).

    Per image and channel, only activations above ``tau * max`` of that channel are averaged, so a
    channel that fires strongly on a small object is not diluted by the background around it.
    A channel with no activation above its threshold (all zero, e.g. after ReLU) pools to 0.
    """

    def __init__(self, tau: float = TAP_DEFAULT_TAU) -> None:
        super().__init__()
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"TAP threshold tau must be in [0, 1), got {tau}")
        self.tau = float(tau)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        peak = feature.amax(dim=(2, 3), keepdim=True)
        kept = feature > self.tau * peak
        total = torch.where(kept, feature, torch.zeros_like(feature)).sum(dim=(2, 3), keepdim=True)
        count = kept.sum(dim=(2, 3), keepdim=True).clamp_min(1)
        return total / count

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class ClassifierHead(nn.Module):
    """Pooling followed by a 1x1 convolution with bias (the CAM weights)."""

    def __init__(self, in_channels: int, num_classes: int, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=True)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_channels

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(feature)).flatten(1)


def make_head(kind: str, in_channels: int, num_classes: int, *, tau: float = TAP_DEFAULT_TAU):
    """The main head for ``kind`` (``recam`` uses a GAP main head; its second head is separate)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if kind == "recam" and num_classes < 2:
        # The ReCAM head is trained with a softmax over classes: one class has nothing to contrast.
        raise ValueError(f"head 'recam' needs num_classes >= 2 (softmax over classes), got {num_classes}")
    pool = ThresholdedAvgPool(tau) if kind == "tap" else GlobalAvgPool()
    return ClassifierHead(in_channels, num_classes, pool)


def recam_loss(
    feature: torch.Tensor,
    cam_weight: torch.Tensor,
    recam_head: nn.Conv2d,
    labels: torch.Tensor,
) -> torch.Tensor:
    """ReCAM's softmax cross-entropy on CAM-masked features (Chen et al. 2022).

    For every (image, present class) pair the main head's CAM of that class, ReLU'd and scaled to
    peak 1, weights the feature map; the spatial mean of the weighted map is that class's feature
    vector. The second classifier must tell, by softmax over all classes, which class each vector
    came from. Summed over pairs and divided by the batch size, as the reference code does.
    """
    batch, channels = feature.shape[:2]
    if labels.shape[0] != batch:
        raise ValueError(f"labels have {labels.shape[0]} rows for a batch of {batch} images")
    image_idx, class_idx = torch.nonzero(labels > 0, as_tuple=True)
    if image_idx.numel() == 0:
        return feature.sum() * 0.0  # keeps the graph (and DDP) happy on an all-negative batch
    cams = F.relu(F.conv2d(feature, cam_weight.reshape(cam_weight.shape[0], channels, 1, 1)))
    cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)
    picked_cams = cams[image_idx, class_idx]  # [P, h, w]
    picked_features = feature[image_idx]  # [P, K, h, w]
    pooled = (picked_features * picked_cams.unsqueeze(1)).mean(dim=(2, 3))  # [P, K]
    logits = recam_head(pooled[:, :, None, None]).flatten(1)  # [P, C]
    return F.cross_entropy(logits, class_idx, reduction="sum") / batch
