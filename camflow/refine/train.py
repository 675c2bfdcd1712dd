"""Training AffinityNet on confident labels: images [3, H, W] (prepared as for the classifier)
and their confident labels [H, W] (uint8: 0 background, k+1 class k, 255 undecided).

Defaults follow AffinityNet's recipe: SGD with momentum 0.9, a poly schedule (power 0.9), the
new head at ten times the backbone's rate, weight decay 5e-4, random horizontal flips; 3 epochs,
as IRN trains its affinity network (AffinityNet: 8). The backbone's rate is 0.01, a tenth of
the papers' 0.1, as it starts from the fine-tuned classifier rather than ImageNet weights. None
is tuned on any split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from camflow.refine.affinity import AffinityNet, affinity_loss, affinity_targets, labels_on_grid
from camflow.refine.walk import half_offsets, pair_affinities

__all__ = ["AffinityTraining", "ConfidentItems", "fit_affinity"]

log = logging.getLogger("camflow.refine")


@dataclass(frozen=True)
class AffinityTraining:
    epochs: int = 3
    batch_size: int = 8
    lr: float = 0.01
    head_lr_scale: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class ConfidentItems(Dataset):
    """(image, confident labels) pairs held in memory, with their ids for error messages."""

    def __init__(self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                 ids: Sequence[str]) -> None:
        if not len(images) == len(labels) == len(ids):
            raise ValueError(f"{len(images)} images, {len(labels)} label maps, {len(ids)} ids")
        for image, label, image_id in zip(images, labels, ids):
            if image.shape[-2:] != label.shape[-2:]:
                raise ValueError(f"image {image_id!r}: labels {tuple(label.shape)} do not fit "
                                 f"the image {tuple(image.shape)}")
        self.images, self.labels, self.ids = list(images), list(labels), list(ids)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def _param_groups(net: AffinityNet, config: AffinityTraining) -> list[dict]:
    backbone = [p for p in net.stages.parameters() if p.requires_grad]
    head = [*net.heads.parameters(), *net.mix.parameters()]
    return [{"params": backbone, "lr": config.lr},
            {"params": head, "lr": config.lr * config.head_lr_scale}]


def fit_affinity(net: AffinityNet, items: ConfidentItems, *, radius: int,
                 config: AffinityTraining = AffinityTraining(),
                 device: torch.device | None = None) -> list[float]:
    """Train ``net`` in place; returns the mean loss of every epoch."""
    device = device or torch.device("cpu")
    net.to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(items, batch_size=config.batch_size, shuffle=True, generator=generator,
                        drop_last=len(items) > config.batch_size)
    optimizer = torch.optim.SGD(_param_groups(net, config), momentum=config.momentum,
                                weight_decay=config.weight_decay)
    base = [g["lr"] for g in optimizer.param_groups]
    total, step, history = config.epochs * len(loader), 0, []
    for epoch in range(config.epochs):
        started, losses = time.monotonic(), []
        for images, labels in loader:
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * (1 - step / total) ** 0.9
            if config.flip:
                flip = torch.rand(images.shape[0], generator=generator) < 0.5
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
            images, labels = images.to(device), labels.to(device)
            features = net(images)
            grid = labels_on_grid(labels, tuple(features.shape[-2:]))
            affinity = pair_affinities(features, half_offsets(radius))
            loss = affinity_loss(affinity, affinity_targets(grid, radius))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append(sum(losses) / max(len(losses), 1))
        log.info("affinity epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, config.epochs,
                 history[-1], time.monotonic() - started)
    net.eval()
    return history
