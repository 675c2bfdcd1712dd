"""The CAM engine: capture feature maps (and gradients), ask the method for weights, sum.

For every method the map of class k of image b is ``relu(sum_c w[b, k, c] * A_c)``. Per layer the
C feature maps are projected to K class maps first (a batched matrix product) and only the K maps
are resized to the largest layer's resolution: this is exact, because resizing is linear, and far
cheaper than resizing C channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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

__all__ = [
    "GRADIENT_MODES",
    "CamRequest",
    "class_maps",
    "class_maps_many",
    "compute",
    "compute_many",
    "normalize_max",
    "resize",
]

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
    request = CamRequest(method, layers, head=head, options=method_options)
    return class_maps_many(model, images, {method: request}, classes)[method]


@dataclass(frozen=True)
class CamRequest:
    """One method's maps in a shared pass: the method, its layers, head and options.

    ``options`` are the method's keyword options of ``compute`` (``weights=``, ``batch_size=``,
    ``gradient_mode=``).
    """

    method: str
    layers: Sequence[str] | str
    head: nn.Module | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)


def compute_many(
    model: nn.Module,
    images: Tensor,
    requests: Mapping[str, CamRequest],
    classes: Tensor | Sequence[int],
    *,
    size: tuple[int, int] | None = None,
    normalize: bool = False,
) -> dict[str, Tensor]:
    """The maps of several methods from one shared pass: ``{key: [B, K, h, w]}``.

    Each request's maps equal ``compute`` of that method alone, but the passes are shared: the
    layers every request needs are captured together, gradient-free methods read one forward, and
    all gradient methods share that forward plus one batched backward (one more pass per extra
    ``gradient_mode``). Score-CAM still runs its own masked forwards. ``size`` and ``normalize``
    are those of ``compute``.
    """
    out_size = check_size(size)
    maps = class_maps_many(model, images, requests, classes)
    for key, m in maps.items():
        m = m.clamp_min_(0)
        if out_size is not None:
            m = resize(m, out_size)
        maps[key] = normalize_max(m) if normalize else m
    return maps


def class_maps_many(
    model: nn.Module,
    images: Tensor,
    requests: Mapping[str, CamRequest],
    classes: Tensor | Sequence[int],
) -> dict[str, Tensor]:
    """``class_maps`` of every request, from shared passes (see ``compute_many``)."""
    if not requests:
        raise ValueError("requests: give at least one method")
    specs = {key: get_method(r.method) for key, r in requests.items()}
    for key, request in requests.items():
        _check_options(specs[key], request.layer_names, request.options)
    images = check_images(images).to(_device_of(model, images))
    classes = check_classes(classes, images.shape[0], images.device)

    # One pass per gradient mode; the gradient-free methods ride on the first.
    passes: dict[str | None, list[str]] = {}
    for key, spec in specs.items():
        mode = requests[key].options.get("gradient_mode", "batched") if spec.gradients else None
        passes.setdefault(mode, []).append(key)
    if None in passes and len(passes) > 1:
        free = passes.pop(None)
        passes[next(iter(passes))].extend(free)

    logits_of = _logits_in_caller_precision(model, images.device.type)
    maps: dict[str, Tensor] = {}
    for mode, keys in passes.items():
        activations, gradients = _shared_pass(
            model, images, classes, mode, {k: requests[k] for k in keys}, {k: specs[k] for k in keys}
        )
        with torch.autocast(images.device.type, enabled=False):
            for key in keys:
                spec, request = specs[key], requests[key]
                names = request.layer_names
                inputs = MethodInputs(
                    model=model,
                    logits_of=logits_of,
                    images=images,
                    classes=classes,
                    layers=names,
                    activations=_activations_for(activations, names, spec.rectify_activations),
                    gradients={n: gradients[n] for n in names} if spec.gradients else None,
                    head=request.head,
                    options={k: v for k, v in request.options.items() if k != "gradient_mode"},
                )
                weights = spec.rule(inputs)
                maps[key] = _weighted_sum(spec.name, inputs.activations, weights)
    return {key: maps[key] for key in requests}


def _shared_pass(
    model: nn.Module,
    images: Tensor,
    classes: Tensor,
    mode: str | None,
    requests: Mapping[str, CamRequest],
    specs: Mapping[str, MethodSpec],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One forward (plus one backward when ``mode`` is set) capturing every requested layer."""
    layers = _union(r.layer_names for r in requests.values())
    grad_layers = _union(requests[k].layer_names for k, s in specs.items() if s.gradients)
    with capture(model, layers, retain_grad=mode is not None) as cap:
        if mode is not None:
            gradients = _class_gradients(model, cap, images, classes, mode, grad_layers)
        else:
            with torch.no_grad():
                output = model(images)
            if any(s.uses_logits for s in specs.values()):
                check_class_range(classes, as_logits(output).shape[1], "the model's logits")
            del output
            gradients = {}
        activations = _float_activations(cap, layers, images.shape[0])
    return activations, gradients


def _union(groups: Any) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return tuple(seen)


def _activations_for(
    activations: Mapping[str, Tensor], layers: tuple[str, ...], rectify: bool
) -> dict[str, Tensor]:
    return {n: activations[n].clamp_min(0) if rectify else activations[n] for n in layers}


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
    model: nn.Module,
    cap: Capture,
    images: Tensor,
    classes: Tensor,
    mode: str,
    layers: tuple[str, ...],
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
            grads = cap.gradients(picked.sum(), layers=layers)
            return {
                name: g.reshape(num, batch, *g.shape[1:]).transpose(0, 1).float()
                for name, g in grads.items()
            }
        x = images.detach().requires_grad_(True)
        logits = as_logits(model(x))
        check_class_range(classes, logits.shape[1], "the model's logits")
        one_hot = torch.zeros(num, *logits.shape, dtype=logits.dtype, device=logits.device)
        one_hot.scatter_(2, classes.T.unsqueeze(-1), 1)
        grads = cap.gradients(logits, one_hot, is_grads_batched=True, layers=layers)
    return {name: g.transpose(0, 1).float() for name, g in grads.items()}


def _float_activations(cap: Capture, layers: tuple[str, ...], batch: int) -> dict[str, Tensor]:
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
        activations[name] = act.float()
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
