"""Training the segmentation model on pseudo masks, and scoring it on true masks.

Items are (image [3, H, W] prepared as for the classifier, mask [H, W] uint8: 0 background, k+1
class k, 255 ignored). The recipe is DeepLabV3's: SGD with momentum 0.9, poly schedule (power
0.9), weight decay 1e-4, the head at ten times the backbone's rate, random horizontal flips,
cross-entropy that skips 255. Epochs and rate are set for camflow's small images; none is tuned
on the val split, which only scores the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from camflow.metrics.seg import SegConfusion
from camflow.postprocess.masks import IGNORE

__all__ = ["MaskItems", "SegTraining", "fit_segmenter", "predict", "score_segmenter"]

log = logging.getLogger("camflow.segment")


@dataclass(frozen=True)
class SegTraining:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 0.01
    head_lr_scale: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class MaskItems(Dataset):
    """(image, mask) pairs in memory, each checked to fit."""

    def __init__(self, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                 ids: Sequence[str]) -> None:
        if not len(images) == len(masks) == len(ids):
            raise ValueError(f"{len(images)} images, {len(masks)} masks, {len(ids)} ids")
        for image, mask, image_id in zip(images, masks, ids):
            if image.shape[-2:] != mask.shape[-2:]:
                raise ValueError(f"image {image_id!r}: mask {tuple(mask.shape)} does not fit the "
                                 f"image {tuple(image.shape)}")
        self.images, self.masks, self.ids = list(images), list(masks), list(ids)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]


def _param_groups(model: nn.Module, config: SegTraining) -> list[dict]:
    return [{"params": list(model.backbone.parameters()), "lr": config.lr},
            {"params": list(model.classifier.parameters()),
             "lr": config.lr * config.head_lr_scale}]


def fit_segmenter(model: nn.Module, items: MaskItems, config: SegTraining = SegTraining(),
                  device: torch.device | None = None) -> list[float]:
    """Train ``model`` (torchvision's DeepLabV3 interface) in place; mean loss per epoch."""
    device = device or torch.device("cpu")
    model.to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(items, batch_size=config.batch_size, shuffle=True, generator=generator,
                        drop_last=len(items) > config.batch_size)
    optimizer = torch.optim.SGD(_param_groups(model, config), momentum=config.momentum,
                                weight_decay=config.weight_decay)
    base = [g["lr"] for g in optimizer.param_groups]
    total, step, history = config.epochs * len(loader), 0, []
    for epoch in range(config.epochs):
        started, losses = time.monotonic(), []
        for images, masks in loader:
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * (1 - step / total) ** 0.9
            if config.flip:
                flip = torch.rand(images.shape[0], generator=generator) < 0.5
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
            images, masks = images.to(device), masks.to(device).long()
            if (masks == IGNORE).all():
                step += 1
                continue
            loss = F.cross_entropy(model(images)["out"], masks, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append(sum(losses) / max(len(losses), 1))
        log.info("segmentation epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, config.epochs,
                 history[-1], time.monotonic() - started)
    model.eval()
    return history


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
