"""Seeds of an image's own classes, walked on its affinities, back at the image's resolution.

IRN's thresholds (confident foreground 0.30, background 0.05, background 0.25 after the walk)
are fractions of a CAM on IRN's scale, the one whose pseudo masks take background at 0.15 (IRN's
CAM threshold). Another method's seeds have their own background score, chosen by calibration;
raised to the power that takes that score to 0.15 (``seed_power``), they are on IRN's scale and
its thresholds apply unchanged. The power keeps every map's order and maximum, so the unrefined
pseudo masks are the same before and after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from camflow.postprocess.masks import BG_THRESHOLD
from camflow.refine.affinity import AFFINITY_STRIDE, AFFINITY_STRIDES
from camflow.refine.walk import random_walk, transition

__all__ = ["IRN_CAM_THRESHOLD", "RefineOptions", "refined_scores", "seed_power"]

IRN_CAM_THRESHOLD = 0.15


@dataclass(frozen=True)
class RefineOptions:
    """The refinement's hyper-parameters; defaults from AffinityNet and IRN (see the package)."""

    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    cam_threshold: float = IRN_CAM_THRESHOLD
    crf: bool = True
    stride: int = AFFINITY_STRIDE
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
        for name in ("mask_bg_threshold", "cam_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if self.stride not in AFFINITY_STRIDES:
            raise ValueError(f"stride must be one of {AFFINITY_STRIDES}, got {self.stride}")


def seed_power(seed_bg_threshold: float | None, options: RefineOptions = RefineOptions()
               ) -> float:
    """The power that puts seeds whose pseudo masks take background at ``seed_bg_threshold``
    on IRN's scale (that score becomes ``options.cam_threshold``); 1 when None (seeds taken as
    they are)."""
    if seed_bg_threshold is None:
        return 1.0
    if not 0.0 < seed_bg_threshold < 1.0:
        raise ValueError(f"seed background threshold must lie in (0, 1), got {seed_bg_threshold}")
    return math.log(options.cam_threshold) / math.log(seed_bg_threshold)


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
