"""Score-CAM (Wang et al. 2020): channel weights from the model's scores on masked images.

Each channel map, upsampled to the image and min-max normalised to [0, 1], masks the image; the
model's logit for each requested class on that masked image is the channel's score, and the
weights are the softmax of the scores over channels. The masked forwards serve all K classes at
once: the cost is B * C forwards (C = channels of the layer) whatever K is, run ``batch_size``
masked images at a time.

Formula as in pytorch-grad-cam 1.5.7 (which the parity test pins): masks are upsampled
bilinearly with align_corners=True, normalised with (m - min) / (max - min + 1e-8), and the
softmax is taken over the raw logits. The paper subtracts a baseline score and uses the softmax
class probability; that is not done here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camflow.cams.registry import MethodInputs, register_method

DEFAULT_BATCH_SIZE = 32


@torch.no_grad()
def _channel_scores(inputs: MethodInputs, activations: Tensor, batch_size: int) -> Tensor:
    """Logits ``[B, C, K]`` of the requested classes on each channel-masked image."""
    images, classes = inputs.images, inputs.classes
    batch, channels = activations.shape[:2]
    height, width = images.shape[-2:]
    scores = torch.empty(batch, channels, classes.shape[1], device=images.device)
    pairs = torch.arange(batch * channels, device=images.device)
    for chunk in pairs.split(batch_size):
        image_idx, channel_idx = chunk // channels, chunk % channels
        maps = activations[image_idx, channel_idx][:, None]
        masks = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=True)
        low = masks.amin(dim=(-2, -1), keepdim=True)
        high = masks.amax(dim=(-2, -1), keepdim=True)
        masks = (masks - low) / (high - low + 1e-8)
        logits = inputs.logits_of(images[image_idx] * masks.to(images.dtype))
        scores[image_idx, channel_idx] = logits.gather(1, classes[image_idx]).float()
    return scores


@register_method("scorecam", options=("batch_size",), uses_logits=True)
def scorecam(inputs: MethodInputs) -> dict[str, Tensor]:
    """Score-CAM: w = softmax over channels of the logit on the image masked by each channel."""
    batch_size = inputs.options.get("batch_size", DEFAULT_BATCH_SIZE)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    weights = {}
    for name in inputs.layers:
        scores = _channel_scores(inputs, inputs.activations[name], batch_size)
        weights[name] = scores.softmax(dim=1).transpose(1, 2)  # [B, K, C]
    return weights
