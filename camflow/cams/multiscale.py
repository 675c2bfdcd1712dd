"""Multi-scale + flip aggregation of CAMs, as WSSS pipelines read out seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camflow.cams.engine import CamRequest, compute_many, normalize_max
from camflow.cams.validation import check_classes, check_images, check_size

__all__ = ["SCALES", "multiscale", "multiscale_many"]

# The usual multi-scale inference of CAM-based WSSS (IRN, ReCAM), the default of every layer.
SCALES = (1.0, 0.5, 1.5, 2.0)


def multiscale(
    model: nn.Module,
    images: Tensor,
    method: str,
    layers: Sequence[str] | str,
    classes: Tensor | Sequence[int],
    *,
    scales: Sequence[float] = SCALES,
    flip: bool = True,
    size: tuple[int, int] | None = None,
    head: nn.Module | None = None,
    **method_options: Any,
) -> Tensor:
    """Maps ``[B, K, H, W]`` summed over ``scales`` and horizontal flips, each divided by its max.

    Every scale resizes the images bilinearly (antialiased when shrinking) to round(H * s) x
    round(W * s); with ``flip`` the mirrored images run in the same batch and their maps are
    mirrored back. Each (ReLU'd) map is upsampled to the image size (or ``size``) and summed;
    finally each class map is divided by its maximum (all-zero maps stay zero). Other arguments
    and ``method_options`` (``head=``, ``weights=``, ``batch_size=``, ...) are those of
    ``camflow.cams.compute``.
    """
    request = CamRequest(method, layers, head=head, options=method_options)
    return multiscale_many(
        model, images, {method: request}, classes, scales=scales, flip=flip, size=size
    )[method]


def multiscale_many(
    model: nn.Module,
    images: Tensor,
    requests: Mapping[str, CamRequest],
    classes: Tensor | Sequence[int],
    *,
    scales: Sequence[float] = SCALES,
    flip: bool = True,
    size: tuple[int, int] | None = None,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """``multiscale`` of several methods, one shared pass per scale (``compute_many``).

    ``normalize=False`` leaves the sums undivided, for a caller that resizes them again and
    normalises once at the end."""
    images = check_images(images)
    batch, _, height, width = images.shape
    out_size = check_size(size) or (height, width)
    classes = check_classes(classes, batch, images.device)
    if not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise ValueError(f"scales: expected positive numbers, got {scales!r}")

    totals: dict[str, Tensor] = {}
    for scale in scales:
        scaled_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = images
        if scaled_size != (height, width):
            x = F.interpolate(
                images,
                size=scaled_size,
                mode="bilinear",
                align_corners=False,
                antialias=scale < 1,
            )
        cls = classes
        if flip:
            x = torch.cat([x, x.flip(-1)])
            cls = torch.cat([classes, classes])
        for key, maps in compute_many(model, x, requests, cls, size=out_size).items():
            if flip:
                maps = maps[:batch] + maps[batch:].flip(-1)
            totals[key] = maps if key not in totals else totals[key] + maps
    if not normalize:
        return totals
    return {key: normalize_max(total) for key, total in totals.items()}
