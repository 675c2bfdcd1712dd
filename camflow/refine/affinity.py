"""AffinityNet: a backbone with a light head whose features say which neighbouring pixels belong
together, trained on the confident labels of the seeds (Ahn & Kwak, CVPR 2018).

The backbone runs at output stride 8 (its last two stages dilated). The features live on a grid
of stride 4 (IRN's, the default: stages 2 to 5) or 8 (AffinityNet's: stages 3 to 5); each stage
goes through a 1x1 convolution (32, 64, 128, 256 channels: AffinityNet's 64/128/256 for stages
3-5), is resized to the grid, and the concatenation is mixed by one more 1x1 convolution. The affinity of two pixels is exp(-mean |f_i - f_j|). A pair of
confident pixels is positive when both have the same label (background pairs and foreground
pairs counted apart, as the two are unbalanced), negative when their labels differ; pairs with
an undecided pixel (255) teach nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from camflow.models.backbones import make_backbone
from camflow.postprocess.masks import IGNORE
from camflow.refine.walk import half_offsets, pair_affinities, shifted

__all__ = ["AFFINITY_STRIDE", "AFFINITY_STRIDES", "AffinityNet", "AffinityTargets", "affinity_loss",
           "affinity_targets", "labels_on_grid"]

AFFINITY_STRIDE = 4
AFFINITY_STRIDES = (4, 8)
_HEAD_CHANNELS = (32, 64, 128, 256)  # stages 2..5
_BACKBONE_STRIDE = 8


class AffinityNet(nn.Module):
    """Pixel features [B, D, H/stride, W/stride] for the affinities of a backbone built by name."""

    def __init__(self, backbone: str = "resnet18", *, stride: int = AFFINITY_STRIDE,
                 pretrained: bool | str = False) -> None:
        super().__init__()
        if stride not in AFFINITY_STRIDES:
            raise ValueError(f"affinity stride must be one of {AFFINITY_STRIDES}, got {stride}")
        built = make_backbone(backbone, output_stride=_BACKBONE_STRIDE, pretrained=pretrained)
        self.stages = nn.ModuleList(built.stages)
        self.backbone_name, self.stride = backbone, stride
        self.first = 1 if stride == 4 else 2  # the first stage whose features are used
        channels = _HEAD_CHANNELS[self.first - 1:]
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64)
            widths = []
            for i, stage in enumerate(self.stages):
                probe = stage(probe)
                if i >= self.first:
                    widths.append(probe.shape[1])
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out, 1, bias=False), nn.GroupNorm(4, out), nn.ReLU())
            for c, out in zip(widths, channels))
        self.mix = nn.Conv2d(sum(channels), sum(channels), 1)
        self.image_prep = None  # how images become its input, when it comes from a classifier

    @classmethod
    def from_classifier(cls, classifier: nn.Module, *, stride: int = AFFINITY_STRIDE
                        ) -> AffinityNet:
        """An AffinityNet whose backbone starts from a trained camflow classifier's stages
        (``stage1``..``stage5``; dilation changes no weight's shape), its image prep kept."""
        spec = getattr(classifier, "spec", {}) or {}
        net = cls(spec.get("name", "resnet18"), stride=stride)
        for i, stage in enumerate(net.stages):
            stage.load_state_dict(getattr(classifier, f"stage{i + 1}").state_dict())
        net.image_prep = getattr(classifier, "image_prep", None)
        return net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, taken = images, []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first:
                taken.append(x)
        size = taken[0].shape[-2:]
        parts = [head(F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                      if t.shape[-2:] != size else t) for head, t in zip(self.heads, taken)]
        return self.mix(torch.cat(parts, dim=1))

    def affinities(self, images: torch.Tensor, radius: int) -> torch.Tensor:
        """[B, P, h, w]: the affinity of every pixel and its half-window neighbours."""
        return pair_affinities(self(images), half_offsets(radius))


def labels_on_grid(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Confident labels [B, H, W] (uint8, 255 undecided) on the feature grid: nearest pixel."""
    grid = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return grid[:, 0].to(torch.uint8)


@dataclass(frozen=True)
class AffinityTargets:
    """Masks [B, P, h, w] of the neighbour pairs of each kind."""

    bg_positive: torch.Tensor
    fg_positive: torch.Tensor
    negative: torch.Tensor


def affinity_targets(labels: torch.Tensor, radius: int) -> AffinityTargets:
    """Which pairs (pixel, pixel + half offset) of the grid labels [B, h, w] are what."""
    labels = labels.long()
    bg, fg, neg = [], [], []
    for dy, dx in half_offsets(radius):
        other, inside = shifted(labels, dy, dx)
        known = inside & (labels != IGNORE) & (other != IGNORE)
        same = labels == other
        bg.append(known & same & (labels == 0))
        fg.append(known & same & (labels != 0))
        neg.append(known & ~same)
    return AffinityTargets(torch.stack(bg, 1), torch.stack(fg, 1), torch.stack(neg, 1))


def _mean_where(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    return (values * mask).sum() / count.clamp(min=1)


def affinity_loss(affinity: torch.Tensor, targets: AffinityTargets) -> torch.Tensor:
    """AffinityNet's balanced cross-entropy: background pairs 1/4, foreground pairs 1/4,
    negative pairs 1/2, each averaged over its own pairs."""
    eps = 1e-5
    positive = -torch.log(affinity + eps)
    negative = -torch.log(1.0 + eps - affinity)
    return (_mean_where(positive, targets.bg_positive) / 4
            + _mean_where(positive, targets.fg_positive) / 4
            + _mean_where(negative, targets.negative) / 2)
