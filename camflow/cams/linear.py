"""Weight rules that read a fixed linear map: CAM, CAM + NWC, ReCAM and BroadCAM.

They need no gradients and no extra forward pass: one forward captures the feature maps and the
weights of every requested class are rows of a matrix. That is why these methods cost about one
forward pass whatever the number of classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camflow.cams.registry import MethodInputs, register_method
from camflow.cams.validation import check_class_range

__all__ = ["broadcam_matrix", "find_head", "head_matrix"]


def _is_head(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.groups == 1
        and module.stride == (1, 1)
    )


def find_head(model: nn.Module) -> nn.Module:
    """The classifier head of ``model``: its last ``nn.Linear`` or 1x1 ``nn.Conv2d``.

    "Last" is in registration order (``model.modules()``), which is forward order for
    torchvision models. Raises ``ValueError`` when the model has neither.
    """
    heads = [m for m in model.modules() if _is_head(m)]
    if not heads:
        raise ValueError(
            f"head: {type(model).__name__} has no nn.Linear or 1x1 nn.Conv2d classifier head; "
            "pass head= the module that maps pooled features to class scores, or weights="
        )
    return heads[-1]


def head_matrix(head: nn.Module) -> Tensor:
    """The ``[num_classes, C]`` weight matrix of a Linear or 1x1-conv head (no copy)."""
    if not _is_head(head):
        raise ValueError(
            f"head: expected an nn.Linear or a 1x1 nn.Conv2d, got {type(head).__name__}"
        )
    return head.weight.reshape(head.weight.shape[0], -1)


def _as_matrix(value: Any, what: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor) or value.dim() != 2 or not value.dtype.is_floating_point:
        shape = list(value.shape) if hasattr(value, "shape") else type(value).__name__
        raise ValueError(f"{what}: expected a 2-D floating tensor or array, got {shape}")
    return value


def _class_rows(inputs: MethodInputs, method: str, *, auto_head: bool) -> Tensor:
    """``[num_classes, C]`` weights from ``head=``, ``weights=`` or (for ``cam``) the model."""
    weights = inputs.options.get("weights")
    if weights is not None and inputs.head is not None:
        raise ValueError(f"{method}: give head= or weights=, not both")
    if weights is not None:
        matrix, source = _as_matrix(weights, "weights"), "weights"
    elif inputs.head is not None:
        matrix, source = head_matrix(inputs.head), f"head {type(inputs.head).__name__}"
    elif auto_head:
        head = find_head(inputs.model)
        matrix, source = head_matrix(head), f"the model's head {type(head).__name__}"
    else:
        raise ValueError(
            f"{method}: needs head= (the trained ReCAM head, an nn.Linear or 1x1 conv) "
            "or weights= a [num_classes, C] tensor"
        )
    (layer,) = inputs.layers
    channels = inputs.activations[layer].shape[1]
    if matrix.shape[1] != channels:
        raise ValueError(
            f"{method}: {source} expects {matrix.shape[1]} input channels but layer {layer!r} "
            f"has {channels}; name the layer the head pools (for example 'layer4')"
        )
    check_class_range(inputs.classes, matrix.shape[0], source)
    return matrix.detach().to(device=inputs.classes.device, dtype=torch.float32)


@register_method("cam", options=("weights",), single_layer=True)
def cam(inputs: MethodInputs) -> dict[str, Tensor]:
    """CAM (Zhou et al. 2016): w = the head's weights of each class (bias left out).

    For a GAP + linear head the spatial mean of the unclamped map equals logit - bias.
    """
    (layer,) = inputs.layers
    return {layer: _class_rows(inputs, "cam", auto_head=True)[inputs.classes]}


@register_method("cam_nwc", options=("weights",), single_layer=True)
def cam_nwc(inputs: MethodInputs) -> dict[str, Tensor]:
    """CAM with negative weight clamping (Bae et al.): the head's weights, negatives set to 0."""
    (layer,) = inputs.layers
    return {layer: _class_rows(inputs, "cam_nwc", auto_head=True).clamp_min(0)[inputs.classes]}


@register_method("recam", options=("weights",), single_layer=True)
def recam(inputs: MethodInputs) -> dict[str, Tensor]:
    """ReCAM (Chen et al. 2022): CAM read with the weights of the second head trained with
    softmax cross-entropy on CAM-masked features. That head must be given: ``head=`` or
    ``weights=`` ([num_classes, C]); the model's own classifier is never used in its place.
    """
    (layer,) = inputs.layers
    return {layer: _class_rows(inputs, "recam", auto_head=False)[inputs.classes]}


def broadcam_matrix(weights: Any, layers: dict[str, int]) -> Tensor:
    """BroadCAM's collapsed BLS weights as a ``[D, num_classes]`` tensor for ``layers``.

    ``layers`` maps each layer name to its channel count, in order; D is their sum. ``weights`` is
    a tensor/array ``[D, num_classes]`` or a fitted estimator with ``coef_`` (``camflow.bls.BLS``
    or any look-alike). An array whose first axis is not D but whose second is, is read in
    scikit-learn's ``[num_classes, D]`` layout and transposed. An estimator that records the
    layers it was fitted on (``feature_layout``: [(name, channels), ...]) must match ``layers``.
    """
    depth = sum(layers.values())
    if weights is None:
        raise ValueError(
            "broadcam: needs weights= the fitted BLS (an object with coef_) or a "
            f"[D, num_classes] tensor, D = {depth} (the summed channels of the layers)"
        )
    if not isinstance(weights, (Tensor, np.ndarray)):
        layout = getattr(weights, "feature_layout", None)
        if layout and [(str(n), int(c)) for n, c in layout] != list(layers.items()):
            raise ValueError(
                f"broadcam: the BLS was fitted on layers {[tuple(x) for x in layout]} but the "
                f"CAM reads {list(layers.items())}; use the same layers in the same order"
            )
        try:
            weights = weights.coef_
        except AttributeError as err:  # an unfitted estimator raises an AttributeError subclass
            raise ValueError(
                f"broadcam: weights {type(weights).__name__} has no coef_ ({err}); fit the BLS "
                "first, or pass a [D, num_classes] tensor"
            ) from err
    matrix = _as_matrix(weights, "weights")
    if matrix.shape[0] != depth and matrix.shape[1] == depth:
        matrix = matrix.T
    if matrix.shape[0] != depth:
        raise ValueError(
            f"broadcam: weights have shape {list(matrix.shape)} but the layers give "
            f"D = {depth} pooled features; fit the BLS on the same layers, in the same order"
        )
    return matrix


@register_method("broadcam", options=("weights",), rectify_activations=True)
def broadcam(inputs: MethodInputs) -> dict[str, Tensor]:
    """BroadCAM (Lin et al.): weights from a BLS fitted on pooled multi-stage features.

    ``weights`` covers the concatenation of the global-average-pooled features of ``layers`` in
    the order given; it is split per layer. As in the official code the stage maps are ReLU'd
    (a no-op for ResNet stage outputs), the weights are used as they are (negative weights are
    kept), and only the final map is clamped at 0. The official code resizes stages of equal
    stride; here each layer's map is resized to the largest layer's resolution before summing,
    which is the same thing when the strides agree.
    """
    channels = [inputs.activations[name].shape[1] for name in inputs.layers]
    matrix = broadcam_matrix(inputs.options.get("weights"), dict(zip(inputs.layers, channels)))
    check_class_range(inputs.classes, matrix.shape[1], "the BroadCAM weights")
    matrix = matrix.detach().to(device=inputs.classes.device, dtype=torch.float32)
    per_class = matrix.T[inputs.classes]  # [B, K, D]
    return dict(zip(inputs.layers, per_class.split(channels, dim=-1)))
