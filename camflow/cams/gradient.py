"""Gradient-based weight rules: Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM.

``inputs.gradients[layer]`` is ``[B, K, C, h, w]``: d logit / d A for every requested class,
computed by the engine in one batched backward. The rules follow pytorch-grad-cam 1.5.7 exactly
(the parity tests pin it); where that differs from the papers it is said below.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from camflow.cams.registry import MethodInputs, register_method

_SPATIAL = (-2, -1)


def _grads(inputs: MethodInputs) -> Mapping[str, Tensor]:
    assert inputs.gradients is not None  # the engine supplies them for gradients=True methods
    return inputs.gradients


@register_method("gradcam", gradients=True)
def gradcam(inputs: MethodInputs) -> dict[str, Tensor]:
    """Grad-CAM (Selvaraju et al.): w = spatial mean of d logit / d A."""
    return {name: g.mean(dim=_SPATIAL) for name, g in _grads(inputs).items()}


@register_method("gradcampp", gradients=True)
def gradcampp(inputs: MethodInputs) -> dict[str, Tensor]:
    """Grad-CAM++ (Chattopadhyay et al., eq. 19 with the exponential of the score dropped).

    alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6), set to 0 where g == 0, and
    w = sum over pixels of alpha * relu(g), with g the gradient of the raw logit: the
    closed form of pytorch-grad-cam. The paper derives it for exp(score), whose higher derivatives
    are powers of the first one; using the logit keeps the same expression.
    """
    weights = {}
    for name, g in _grads(inputs).items():
        act_sum = inputs.activations[name].sum(dim=_SPATIAL)[:, None, :, None, None]
        g2 = g * g
        alpha = g2 / (2 * g2 + act_sum * g2 * g + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights[name] = (alpha * g.clamp_min(0)).sum(dim=_SPATIAL)
    return weights


@register_method("xgradcam", gradients=True)
def xgradcam(inputs: MethodInputs) -> dict[str, Tensor]:
    """XGrad-CAM (Fu et al.): w_c = sum(A_c * g_c) / (sum(A_c) + 1e-7)."""
    weights = {}
    for name, g in _grads(inputs).items():
        act = inputs.activations[name]
        weighted = torch.einsum("bkchw,bchw->bkc", g, act)
        weights[name] = weighted / (act.sum(dim=_SPATIAL)[:, None, :] + 1e-7)
    return weights


@register_method("layercam", gradients=True)
def layercam(inputs: MethodInputs) -> dict[str, Tensor]:
    """LayerCAM (Jiang et al.): per-pixel weights relu(g), so the map is sum_c relu(g_c) * A_c.

    With several layers camflow sums the layers' (unclamped) maps at the largest layer's
    resolution and then applies ReLU. pytorch-grad-cam instead ReLUs and min-max normalises each
    layer's map at image resolution and averages them; the single-layer maps are identical.
    """
    return {name: g.clamp_min(0) for name, g in _grads(inputs).items()}
