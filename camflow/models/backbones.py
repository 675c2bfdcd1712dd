"""torchvision backbones cut into five named stages.

- ResNet family (resnet*, resnext*, wide_resnet*): stage1 = stem (conv1, bn1, relu, maxpool),
  stage2..stage5 = layer1..layer4.
- VGG family: stage k = conv block k and its max-pool (block 5 keeps its pool only at stride 32).
- Anything else with a ``features`` Sequential (densenet, efficientnet, mobilenet, convnext, ...):
  children grouped into five stages at the points where the spatial resolution drops.

``output_stride`` 16 or 8 removes the last downsampling steps and dilates the convolutions after
them, as WSSS code bases do, so CAMs come out at a finer grid with the same receptive field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from camflow.models.pretrained import apply_pretrained

__all__ = ["OUTPUT_STRIDES", "Backbone", "make_backbone", "to_torchvision_state_dict"]

log = logging.getLogger(__name__)

OUTPUT_STRIDES = (8, 16, 32)
_RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")


@dataclass
class Backbone:
    stages: list[nn.Module]  # five modules, applied in order
    out_channels: int  # channels of the stage5 map
    pretrained: bool  # whether pretrained weights were actually loaded


def _torchvision_model(name: str) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(
            f"unknown backbone {name!r}; torchvision classifiers are: {', '.join(available)}"
        )
    return torchvision.models.get_model(name, weights=None)


def _dilate(stage: nn.Module, dilation: int) -> None:
    """Turn the stage's downsampling into stride 1 and dilate every kxk conv after it."""
    seen_stride = False
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            was_strided = module.stride != (1, 1)
            if was_strided:
                module.stride = (1, 1)
            if seen_stride and module.kernel_size[0] > 1:
                module.dilation = (dilation, dilation)
                module.padding = (dilation * (module.kernel_size[0] - 1) // 2,) * 2
            seen_stride = seen_stride or was_strided
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
            raise ValueError(f"cannot dilate a stage that downsamples by pooling: {module}")


def _resnet(model: nn.Module, output_stride: int) -> tuple[list[nn.Module], int]:
    stem = nn.Sequential()
    for part in ("conv1", "bn1", "relu", "maxpool"):
        stem.add_module(part, getattr(model, part))
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
    if output_stride <= 16:
        _dilate(layers[3], 2 if output_stride == 16 else 4)
    if output_stride == 8:
        _dilate(layers[2], 2)
    return [stem, *layers], model.fc.in_features


def _vgg(model: nn.Module, output_stride: int) -> tuple[list[nn.Module], int]:
    blocks: list[list[nn.Module]] = [[]]
    for layer in model.features:
        blocks[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append([])
    blocks = [b for b in blocks if b]
    if len(blocks) != 5:
        raise ValueError(f"expected 5 VGG conv blocks, found {len(blocks)}")
    # Drop the pools that output_stride removes (last one at 16, last two at 8) and dilate after.
    drop = {32: 0, 16: 1, 8: 2}[output_stride]
    for i in range(5 - drop, 5):
        blocks[i] = [m for m in blocks[i] if not isinstance(m, nn.MaxPool2d)]
    if output_stride == 8:
        for m in blocks[4]:
            if isinstance(m, nn.Conv2d):
                m.dilation, m.padding = (2, 2), (2, 2)
    channels = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)][-1]
    return [nn.Sequential(*b) for b in blocks], channels


def _by_resolution(name: str, model: nn.Module, output_stride: int) -> tuple[list[nn.Module], int]:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError(
            f"backbone {name!r} has no 'features' Sequential to cut into stages; "
            "wrap it with camflow.models.wrap(stages=[...5 modules...])"
        )
    if output_stride != 32:
        raise ValueError(f"output_stride={output_stride} is supported for ResNet and VGG only, not {name!r}")
    x = torch.zeros(1, 3, 64, 64)
    groups: list[list[nn.Module]] = []
    last_size = None
    features.eval()  # the probe must not touch batch-norm running statistics
    with torch.no_grad():
        for child in features:
            x = child(x)
            if x.shape[-1] != last_size:
                groups.append([])
                last_size = x.shape[-1]
            groups[-1].append(child)
    features.train()
    if len(groups) == 4 and len(groups[0]) > 1:
        # e.g. ConvNeXt: the stem already reaches stride 4; it becomes stage1 on its own.
        groups = [groups[0][:1], groups[0][1:], *groups[1:]]
    if len(groups) != 5:
        raise ValueError(
            f"cannot cut {name!r} into 5 stages by resolution (found {len(groups)}); "
            "wrap it with camflow.models.wrap(stages=[...])"
        )
    return [nn.Sequential(*g) for g in groups], int(x.shape[1])


def make_backbone(name: str, *, output_stride: int = 32, pretrained: bool | str = False) -> Backbone:
    """Five stages of torchvision model ``name``; see the module docstring for the cut points."""
    if not isinstance(name, str):
        raise ValueError(f"backbone name must be a string, got {name!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    model = _torchvision_model(name)
    loaded = apply_pretrained(model, name, pretrained)
    if name.startswith(_RESNET_PREFIXES):
        stages, channels = _resnet(model, output_stride)
    elif name.startswith("vgg"):
        stages, channels = _vgg(model, output_stride)
    else:
        stages, channels = _by_resolution(name, model, output_stride)
    return Backbone(stages=stages, out_channels=channels, pretrained=loaded)


def to_torchvision_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A ResNet-family CamClassifier's weights in torchvision's layout (``fc`` from its head).

    ``torchvision.models.get_model(name, num_classes=C).load_state_dict(state)`` then loads it
    strictly: stage1 is the stem, stage2..stage5 are layer1..layer4, the GAP head's 1x1 conv is fc.
    """
    spec = getattr(model, "spec", {}) or {}
    name = str(spec.get("name", ""))
    if not name.startswith(_RESNET_PREFIXES) or spec.get("head", "gap") != "gap":
        raise ValueError(f"only ResNet-family models with a gap head export to torchvision's layout, "
                         f"not {name or type(model).__name__} ({spec.get('head')})")
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        stage, _, rest = key.partition(".")
        if stage == "stage1":
            out[rest] = value
        elif stage in ("stage2", "stage3", "stage4", "stage5"):
            out[f"layer{int(stage[-1]) - 1}.{rest}"] = value
        elif key == "head.classifier.weight":
            out["fc.weight"] = value.flatten(1)
        elif key == "head.classifier.bias":
            out["fc.bias"] = value
        else:
            raise ValueError(f"{key} has no place in torchvision's {name} layout")
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}
