"""Training AffinityNet on confident labels: images [3, H, W] (prepared as for the classifier)
and their confident labels [H, W] (uint8: 0 background, k+1 class k, 255 undecided), with the
dense-training recipe of ``camflow.train.dense``.

Defaults follow AffinityNet's recipe (weight decay 5e-4, the head at ten times the backbone's
rate); 3 epochs, as IRN trains its affinity network (AffinityNet: 8). The backbone's rate is
0.01, a tenth of the papers' 0.1, as it starts from the fine-tuned classifier rather than
ImageNet weights. None is tuned on any split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camflow.refine.affinity import AffinityNet, affinity_loss, affinity_targets, labels_on_grid
from camflow.refine.walk import half_offsets, pair_affinities
from camflow.train.dense import DenseTraining, PixelItems, fit_dense

__all__ = ["AffinityTraining", "ConfidentItems", "fit_affinity"]

ConfidentItems = PixelItems  # (image, confident labels) pairs


@dataclass(frozen=True)
class AffinityTraining(DenseTraining):
    epochs: int = 3
    batch_size: int = 8
    weight_decay: float = 5e-4


def fit_affinity(net: AffinityNet, items: PixelItems, *, radius: int,
                 config: AffinityTraining = AffinityTraining(),
                 device: torch.device | None = None) -> list[float]:
    """Train ``net`` in place; returns the mean loss of every epoch."""
    def loss(module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = module(images)
        grid = labels_on_grid(labels, tuple(features.shape[-2:]))
        return affinity_loss(pair_affinities(features, half_offsets(radius)),
                             affinity_targets(grid, radius))

    return fit_dense(net, items, config, loss, backbone=net.stages.parameters(),
                     head=[*net.heads.parameters(), *net.mix.parameters()], device=device,
                     name="affinity")
