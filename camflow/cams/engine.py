"""The CAM engine: capture feature maps (and gradients), ask the method for weights, sum.

For every method the map of class k of image b is ``relu(sum_c w[b, k, c] * A_c)``. Per layer the
C feature maps are projected to K class maps first (a batched matrix product) and only the K maps
are resized to the largest layer's resolution: this is exact, because resizing is linear, and far
cheaper than resizing C channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camflow.cams.hooks import Capture, capture
from camflow.cams.registry import MethodInputs, MethodSpec, get_method
from camflow.cams.validation import (
    as_logits,
    check_class_range,
    check_classes,
    check_images,
    check_size,
)

__all__ = ["GRADIENT_MODES", "class_maps", "compute", "normalize_max", "resize"]

#: How gradient methods get d logit / d A for K classes from one backward pass:
#: "batched": one forward, then one vectorised backward (``is_grads_batched``) over K one-hot
#: gradient outputs; "expand": the batch repeated K times, one forward and one backward.
GRADIENT_MODES = ("batched", "expand")


def compute(
    model: nn.Module,
    images: Tensor,
    method: str,
    layers: Sequence[str] | str,
    classes: Tensor | Sequence[int],
    *,
    size: tuple[int, int] | None = None,
    normalize: bool = False,
    head: nn.Module | None = None,
    **method_options: Any,
) -> Tensor:
    """Class activation maps ``[B, K, h, w]`` (float32, non-negative) on the model's device.

    model: any ``nn.Module`` returning logits ``[B, num_classes]`` (or a tuple whose first item
        is); put it in eval mode first. Its parameters are not changed.
    images: float ``[B, 3, H, W]``, already normalised; moved to the model's device.
    method: a name in ``camflow.cams.METHODS``: cam, cam_nwc, recam, broadcam, gradcam,
        gradcampp, xgradcam, layercam, scorecam.
    layers: layer name(s) as ``model.named_modules()`` spells them (e.g. ``"layer4"``). With
        several layers each layer's K maps are resized to the largest layer and summed.
    classes: LongTensor ``[B, K]`` (class ids per image) or a list of ids for every image.
    size: ``(H, W)`` to upsample the maps to (bilinear, align_corners=False); default: the
        resolution of the largest layer.
    normalize: divide each map by its maximum (a map that is all zero stays zero).
    head: for ``cam``/``cam_nwc`` the classifier module (default: the model's last Linear or 1x1
        conv); for ``recam`` the ReCAM head (required unless ``weights=`` is given).
    method_options: ``weights=`` for cam/cam_nwc/recam (``[num_classes, C]``) and broadcam
        (``[D, num_classes]`` or an object with ``coef_``); ``batch_size=`` for scorecam;
        ``gradient_mode=`` ("batched" or "expand") for the gradient methods.

    Gradient-free methods take one forward pass for all classes; gradient methods one forward
    and one backward for all K classes; scorecam B * C masked forwards. Works under autocast
    (the weighting itself runs in float32) and with channels_last models.
    """
    out_size = check_size(size)
    maps = class_maps(model, images, method, layers, classes, head=head, **method_options)
    maps = maps.clamp_min_(0)
    if out_size is not None:
        maps = resize(maps, out_size)
    return normalize_max(maps) if normalize else maps


def class_maps(
    model: nn.Module,
    images: Tensor,
    method: str,
    layers: Sequence[str] | str,
    classes: Tensor | Sequence[int],
    *,
    head: nn.Module | None = None,
    **method_options: Any,
) -> Tensor:
    """The signed maps ``sum_c w[b, k, c] * A_c`` before the ReLU, at the largest layer's size.

    Same arguments as ``compute``; ``compute`` is ``class_maps(...).relu()`` plus resizing.
    """
    spec = get_method(method)
    layer_names = (layers,) if isinstance(layers, str) else tuple(layers)
    _check_options(spec, layer_names, method_options)
    gradient_mode = method_options.pop("gradient_mode", "batched")
    images = check_images(images).to(_device_of(model, images))
    classes = check_classes(classes, images.shape[0], images.device)

    with capture(model, layer_names, retain_grad=spec.gradients) as cap:
        if spec.gradients:
            gradients = _class_gradients(model, cap, images, classes, gradient_mode)
        else:
            with torch.no_grad():
                output = model(images)
            if spec.uses_logits:
                check_class_range(classes, as_logits(output).shape[1], "the model's logits")
            del output
            gradients = None
        activations = _float_activations(
            cap, layer_names, spec.rectify_activations, images.shape[0]
        )

    logits_of = _logits_in_caller_precision(model, images.device.type)
    with torch.autocast(images.device.type, enabled=False):
        inputs = MethodInputs(
            model=model,
            logits_of=logits_of,
            images=images,
            classes=classes,
            layers=layer_names,
            activations=activations,
            gradients=gradients,
            head=head,
            options=method_options,
        )
        weights = spec.rule(inputs)
        return _weighted_sum(spec.name, activations, weights)


def resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[B, K, h, w]`` maps (align_corners=False); a no-op at that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def normalize_max(maps: Tensor) -> Tensor:
    """Each ``[h, w]`` map divided by its maximum; all-zero maps stay zero."""
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak))


def _check_options(spec: MethodSpec, layers: tuple[str, ...], options: dict[str, Any]) -> None:
    allowed = spec.options | ({"gradient_mode"} if spec.gradients else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{spec.name}: unknown option(s) {unknown}; it accepts {sorted(allowed) or 'none'}"
        )
    if options.get("gradient_mode", "batched") not in GRADIENT_MODES:
        raise ValueError(
            f"gradient_mode: expected one of {GRADIENT_MODES}, got {options['gradient_mode']!r}"
        )
    if spec.single_layer and len(layers) != 1:
        raise ValueError(
            f"layers: {spec.name} reads the one layer its head pools, got {list(layers)}"
        )


def _logits_in_caller_precision(model: nn.Module, device_type: str) -> Callable[[Tensor], Tensor]:
    """A forward that restores the caller's autocast state inside the engine's float32 region."""
    enabled = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)

    def logits_of(x: Tensor) -> Tensor:
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            return as_logits(model(x))

    return logits_of


def _device_of(model: nn.Module, images: Tensor) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return images.device


def _class_gradients(
    model: nn.Module, cap: Capture, images: Tensor, classes: Tensor, mode: str
) -> dict[str, Tensor]:
    """d logit[b, classes[b, k]] / d A for all K classes, ``[B, K, C, h, w]`` per layer."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradient CAM methods cannot run inside torch.inference_mode()")
    batch, num = classes.shape
    # A leaf that requires grad keeps the activations in the graph even for frozen models.
    with torch.enable_grad():
        if mode == "expand":
            x = images.detach().repeat(num, 1, 1, 1).requires_grad_(True)
            logits = as_logits(model(x))
            check_class_range(classes, logits.shape[1], "the model's logits")
            picked = logits.gather(1, classes.T.reshape(-1, 1))
            grads = cap.gradients(picked.sum())
            return {
                name: g.reshape(num, batch, *g.shape[1:]).transpose(0, 1).float()
                for name, g in grads.items()
            }
        x = images.detach().requires_grad_(True)
        logits = as_logits(model(x))
        check_class_range(classes, logits.shape[1], "the model's logits")
        one_hot = torch.zeros(num, *logits.shape, dtype=logits.dtype, device=logits.device)
        one_hot.scatter_(2, classes.T.unsqueeze(-1), 1)
        grads = cap.gradients(logits, one_hot, is_grads_batched=True)
    return {name: g.transpose(0, 1).float() for name, g in grads.items()}


def _float_activations(
    cap: Capture, layers: tuple[str, ...], rectify: bool, batch: int
) -> dict[str, Tensor]:
    activations = {}
    for name in layers:
        if name not in cap.activations:
            raise RuntimeError(f"layers: layer {name!r} did not run during the forward pass")
        # [:batch]: in "expand" mode the batch was repeated K times, each copy identical.
        act = cap.activations[name].detach()[:batch]
        if act.dim() != 4:
            raise ValueError(
                f"layers: layer {name!r} outputs shape {list(act.shape)}; CAMs need [B, C, h, w]"
            )
        act = act.float()
        activations[name] = act.clamp_min(0) if rectify else act
    return activations


def _weighted_sum(method: str, activations: dict[str, Tensor], weights: Any) -> Tensor:
    """Project each layer to K maps, resize to the largest layer, sum over layers."""
    if set(weights) != set(activations):
        raise RuntimeError(
            f"{method}: weights for layers {sorted(weights)}, expected {sorted(activations)}"
        )
    target = max((a.shape[-2:] for a in activations.values()), key=lambda s: s[0] * s[1])
    total = None
    for name, act in activations.items():
        w = weights[name]
        if w.dim() == 3 and w.shape[0] == act.shape[0] and w.shape[2] == act.shape[1]:
            layer_maps = torch.einsum("bkc,bchw->bkhw", w, act)
        elif w.dim() == 5 and w.shape[:1] + w.shape[2:] == act.shape:
            layer_maps = torch.einsum("bkchw,bchw->bkhw", w, act)
        else:
            raise RuntimeError(
                f"{method}: weights for layer {name!r} have shape {list(w.shape)}; expected "
                f"[B, K, C] or [B, K, C, h, w] for activations {list(act.shape)}"
            )
        layer_maps = resize(layer_maps, tuple(target))
        total = layer_maps if total is None else total + layer_maps
    return total
