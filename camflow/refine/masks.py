"""Seeds of an image's own classes, walked on its affinities, back at the image's resolution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from camflow.postprocess.masks import BG_THRESHOLD
from camflow.refine.walk import random_walk, transition

__all__ = ["RefineOptions", "refined_scores"]


@dataclass(frozen=True)
class RefineOptions:
    """The refinement's hyper-parameters; defaults from AffinityNet and IRN (see the package)."""

    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    radius: int = 5
    beta: float = 8.0
    steps: int = 256
    mask_bg_threshold: float = BG_THRESHOLD

    def __post_init__(self) -> None:
        if not 0.0 <= self.bg_threshold <= self.fg_threshold <= 1.0:
            raise ValueError("need 0 <= bg_threshold <= fg_threshold <= 1, got "
                             f"{self.bg_threshold}, {self.fg_threshold}")
        for name, value, low in (("radius", self.radius, 1), ("beta", self.beta, 0),
                                 ("steps", self.steps, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0.0 <= self.mask_bg_threshold <= 1.0:
            raise ValueError(f"mask_bg_threshold must lie in [0, 1], got {self.mask_bg_threshold}")


def refined_scores(seeds: torch.Tensor, affinity: torch.Tensor,
                   options: RefineOptions = RefineOptions()) -> torch.Tensor:
    """Seeds [B, K, H, W] of each image's own classes (zero maps pad images with fewer) walked
    on the pair affinities [B, P, h, w] of the feature grid; [B, K, H, W], each image's maximum
    1 (or all zero). A walk is linear and keeps a zero map zero, so no class is ever added."""
    size = seeds.shape[-2:]
    grid = F.interpolate(seeds, size=affinity.shape[-2:], mode="bilinear", align_corners=False)
    walked = random_walk(grid, transition(affinity, options.radius, options.beta),
                         options.radius, options.steps)
    up = F.interpolate(walked, size=size, mode="bilinear", align_corners=False).clamp(min=0)
    peak = up.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(peak > 0, up / peak.clamp(min=1e-12), torch.zeros_like(up))
