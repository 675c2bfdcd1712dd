"""The training loss as a module, so DDP sees every parameter used inside one ``forward``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from camflow.models.classifier import CamClassifier
from camflow.models.heads import recam_loss

__all__ = ["Objective"]


class Objective(nn.Module):
    """Multi-label BCE on the main head, plus ReCAM's lambda-weighted softmax CE for ``recam``.

    ``forward(images, labels)`` returns ``{"loss", "logits", "bce"[, "recam"]}``. Wrapping this
    (not the bare model) in DistributedDataParallel keeps the ReCAM head's gradients in sync.
    """

    def __init__(self, model: CamClassifier, *, recam_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.model = model
        self.recam_weight = recam_weight
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, maps = self.model(images, return_stages=True)
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} but the model predicts {tuple(logits.shape)}: "
                f"the head has {logits.shape[1]} classes"
            )
        logits = logits.float()  # the loss in float32 under autocast (bfloat16 has 8 mantissa bits)
        targets = labels.to(logits.dtype)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        bce = F.binary_cross_entropy_with_logits(logits, targets)
        out = {"logits": logits, "bce": bce, "loss": bce}
        if getattr(self.model, "recam_head", None) is not None:
            feature = maps["stage5"]
            extra = recam_loss(feature, self.model.head.classifier.weight, self.model.recam_head, labels)
            out["recam"] = extra
            out["loss"] = bce + self.recam_weight * extra
        return out
