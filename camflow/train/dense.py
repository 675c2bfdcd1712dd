"""Training loops of the dense-prediction models that learn from pseudo labels (AffinityNet on
confident seeds, the segmentation model on pseudo masks): images [3, H, W] prepared as for the
classifier, per-pixel targets [H, W] uint8 with 255 ignored.

One recipe, after AffinityNet's and DeepLabV3's: SGD with momentum, a poly schedule (power 0.9),
the new head at ``head_lr_scale`` times the backbone's rate, random horizontal flips of image and
target together. Each model's defaults are its own subclass of :class:`DenseTraining`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from camflow.data.transforms import ImagePrep

__all__ = ["DenseTraining", "PixelItems", "fit_dense", "pixel_items"]

log = logging.getLogger("camflow.train")


@dataclass(frozen=True)
class DenseTraining:
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


class PixelItems(Dataset):
    """(image, per-pixel target) pairs in memory, each checked to fit, with their image ids."""

    def __init__(self, images: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                 ids: Sequence[str]) -> None:
        if not len(images) == len(targets) == len(ids):
            raise ValueError(f"{len(images)} images, {len(targets)} targets, {len(ids)} ids")
        for image, target, image_id in zip(images, targets, ids):
            if image.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"image {image_id!r}: target {tuple(target.shape)} does not "
                                 f"fit the image {tuple(image.shape)}")
        self.images, self.targets, self.ids = list(images), list(targets), list(ids)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]


# (image id, the image's pixels at the prepared size) -> its target [h, w], or None to skip it
Target = Callable[[str, np.ndarray], "torch.Tensor | None"]


def pixel_items(images: Iterable[tuple[str, np.ndarray]], prep: ImagePrep,
                target: Target) -> PixelItems:
    """Each (image id, uint8 pixels [H, W, 3]) prepared by ``prep``, with the target that
    ``target`` makes of it at the prepared size; images it gives None are left out."""
    prepared, targets, ids = [], [], []
    for image_id, pixels in images:
        picture = Image.fromarray(pixels)
        tensor = prep(picture)
        size = tuple(tensor.shape[-2:])
        at_size = pixels if pixels.shape[:2] == size else np.asarray(
            picture.resize(size[::-1], Image.BILINEAR))
        made = target(image_id, at_size)
        if made is not None:
            prepared.append(tensor)
            targets.append(made)
            ids.append(image_id)
    return PixelItems(prepared, targets, ids)


Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _same(x: Any) -> Any:
    return x


def fit_dense(model: nn.Module, items: PixelItems, config: DenseTraining, loss: Loss, *,
              backbone: Iterable[nn.Parameter], head: Iterable[nn.Parameter],
              device: torch.device | None = None, name: str = "dense",
              prepare_model: Callable[[nn.Module], nn.Module] = _same,
              prepare_loader: Callable[[DataLoader], DataLoader] = _same) -> list[float]:
    """Train ``model`` in place: ``loss(module, images, targets)`` on each batch (on
    ``device``), ``module`` being the model as ``prepare_model`` wrapped it (DDP under Ray
    Train, whose ``prepare_loader`` shards the batches); returns the mean loss of every epoch.
    Every batch takes a step, even one whose targets are all 255 (the loss must then be 0, not
    NaN): under DDP a rank that skipped one would leave the others waiting for its gradients."""
    device = device or torch.device("cpu")
    model.to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    loader = prepare_loader(DataLoader(items, batch_size=config.batch_size, shuffle=True,
                                       generator=generator,
                                       drop_last=len(items) > config.batch_size))
    module = prepare_model(model)
    optimizer = torch.optim.SGD(
        [{"params": list(backbone), "lr": config.lr},
         {"params": list(head), "lr": config.lr * config.head_lr_scale}],
        momentum=config.momentum, weight_decay=config.weight_decay)
    base = [g["lr"] for g in optimizer.param_groups]
    total, step, history = config.epochs * len(loader), 0, []
    for epoch in range(config.epochs):
        started, losses = time.monotonic(), []
        for images, targets in loader:
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * (1 - step / total) ** 0.9
            step += 1
            if config.flip:
                flip = torch.rand(images.shape[0], generator=generator) < 0.5
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                targets = torch.where(flip[:, None, None], targets.flip(-1), targets)
            value = loss(module, images.to(device), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(value.item())
        history.append(sum(losses) / max(len(losses), 1))
        log.info("%s epoch %d/%d: loss %.4f (%.0f s)", name, epoch + 1, config.epochs,
                 history[-1], time.monotonic() - started)
    model.eval()
    return history
