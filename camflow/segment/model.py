"""DeepLabV3 (torchvision's) on a camflow backbone built by name, for the segmentation model that
WSSS trains on pseudo masks.

torchvision's own DeepLabV3 builders offer resnet50/101 and mobilenet_v3 only; here the same
``DeepLabV3`` module and ``DeepLabHead`` (ASPP) sit on any backbone of
``camflow.models.backbones``, so the segmentation model can start from the weights the classifier
started from (the source-pretrained backbone, or ImageNet's) or from the classifier itself.
Atrous rates are DeepLabV3's: 6, 12, 18 at output stride 16, doubled at 8.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from camflow.models.backbones import make_backbone

__all__ = ["SEGMENT_STRIDES", "StagesBackbone", "build_segmenter", "segmenter_from_classifier"]

SEGMENT_STRIDES = (8, 16)


class StagesBackbone(nn.Module):
    """Five named stages as torchvision's segmentation models want a backbone: {"out": map}."""

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for stage in self.stages:
            x = stage(x)
        return OrderedDict(out=x)


def build_segmenter(backbone: str, num_labels: int, *, output_stride: int = 16,
                    pretrained: bool | str = False) -> DeepLabV3:
    """DeepLabV3 with ``num_labels`` outputs (background and every class); ``spec`` rebuilds it."""
    if output_stride not in SEGMENT_STRIDES:
        raise ValueError(f"output_stride must be one of {SEGMENT_STRIDES}, got {output_stride}")
    if num_labels < 2:
        raise ValueError(f"num_labels must be >= 2 (background and a class), got {num_labels}")
    built = make_backbone(backbone, output_stride=output_stride, pretrained=pretrained)
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    model = DeepLabV3(StagesBackbone(built.stages), DeepLabHead(built.out_channels, num_labels,
                                                                atrous_rates=rates))
    model.spec = {"backbone": backbone, "num_labels": num_labels, "output_stride": output_stride}
    model.image_prep = None
    return model


def segmenter_from_classifier(classifier: nn.Module, num_labels: int, *,
                              output_stride: int = 16) -> DeepLabV3:
    """DeepLabV3 whose backbone starts from a camflow classifier's stages (its image prep kept)."""
    spec: dict[str, Any] = getattr(classifier, "spec", {}) or {}
    model = build_segmenter(spec.get("name", "resnet18"), num_labels, output_stride=output_stride)
    for i, stage in enumerate(model.backbone.stages):
        stage.load_state_dict(getattr(classifier, f"stage{i + 1}").state_dict())
    model.image_prep = getattr(classifier, "image_prep", None)
    return model
