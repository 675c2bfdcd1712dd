"""The random walk of AffinityNet / IRN: seeds spread along predicted pixel affinities.

Pixels are joined to the neighbours within ``radius`` (offsets with dy² + dx² < radius², as
AffinityNet does) of the feature grid. With a_ij the predicted affinity of a pair, the
transition matrix is T = D⁻¹ A, A_ij = a_ij^beta (and A_ii = 1), D its row sums; a walk of
``steps`` steps replaces every map x by T^steps x: each step, every pixel takes the
affinity-weighted mean of its neighbourhood. AffinityNet and IRN raise T to the power
2^8 = 256 by squaring a dense N x N matrix; the same T^256 x is computed here as 256
neighbourhood means, batched over images and classes, in O(N * window) memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["half_offsets", "pair_affinities", "random_walk", "shifted", "transition",
           "window_offsets"]


def window_offsets(radius: int) -> list[tuple[int, int]]:
    """Every (dy, dx) with dy² + dx² < radius², (0, 0) included, in raster order."""
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    r = radius - 1
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dy * dy + dx * dx < radius * radius]


def half_offsets(radius: int) -> list[tuple[int, int]]:
    """One offset of every unordered neighbour pair: dy > 0, or dy == 0 and dx > 0."""
    return [(dy, dx) for dy, dx in window_offsets(radius) if dy > 0 or (dy == 0 and dx > 0)]


def shifted(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x[..., y + dy, x + dx]`` at every (y, x) (zero outside), and where that is inside."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    inside = torch.zeros((h, w), dtype=torch.bool, device=x.device)
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[..., ys, xs] = x[..., yd, xd]
    inside[ys, xs] = True
    return out, inside


def pair_affinities(features: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """Affinity exp(-mean_c |f_i - f_j|) of each pixel i [B, D, h, w] and its neighbour
    j = i + offset, [B, P, h, w]; 0 where j is outside the image."""
    out = []
    for dy, dx in offsets:
        other, inside = shifted(features, dy, dx)
        aff = torch.exp(-(features - other).abs().mean(dim=1))
        out.append(aff * inside)
    return torch.stack(out, dim=1)


def transition(affinity: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """Row-stochastic transition weights [B, K, h, w] over the window offsets of ``radius``
    from the affinities [B, P, h, w] of its half offsets (a pair's affinity serves both ends)."""
    half = half_offsets(radius)
    if affinity.shape[1] != len(half):
        raise ValueError(f"affinity has {affinity.shape[1]} offsets, radius {radius} needs "
                         f"{len(half)}")
    weight = affinity.clamp(min=0) ** beta
    by_offset = {(0, 0): torch.ones_like(weight[:, 0])}
    for p, (dy, dx) in enumerate(half):
        # A pair whose far end is outside the grid does not exist, whatever was predicted.
        by_offset[(dy, dx)] = weight[:, p] * shifted(weight[:, p], dy, dx)[1]
        # Pixel j's pair with j - d was stored at j - d: move it to j.
        by_offset[(-dy, -dx)] = shifted(by_offset[(dy, dx)], -dy, -dx)[0]
    stacked = torch.stack([by_offset[o] for o in window_offsets(radius)], dim=1)
    return stacked / stacked.sum(dim=1, keepdim=True)


def random_walk(maps: torch.Tensor, weights: torch.Tensor, radius: int, steps: int) -> torch.Tensor:
    """T^steps applied to every map [B, C, h, w] with the transition ``weights`` [B, K, h, w]."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    b, c, h, w = maps.shape
    offsets = window_offsets(radius)
    k = 2 * radius - 1
    # Where each window offset sits among the k x k positions that unfold enumerates.
    index = torch.tensor([(dy + radius - 1) * k + (dx + radius - 1) for dy, dx in offsets],
                         device=maps.device)
    flat_weights = weights.reshape(b, 1, len(offsets), h * w)
    x = maps
    for _ in range(steps):
        windows = F.unfold(x, k, padding=radius - 1).reshape(b, c, k * k, h * w)
        x = (windows[:, :, index] * flat_weights).sum(dim=2).reshape(b, c, h, w)
    return x
