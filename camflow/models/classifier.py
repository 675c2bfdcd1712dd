"""The CAM classifier: five named stages, a main head and (for ReCAM) a second head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from camflow.data.transforms import ImagePrep
from camflow.models.backbones import make_backbone
from camflow.models.heads import TAP_DEFAULT_TAU, ClassifierHead, make_head

__all__ = ["STAGES", "CamClassifier", "build", "wrap"]

STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5")


class CamClassifier(nn.Module):
    """``stage1``..``stage5`` then ``head``; ``forward(x)`` returns logits ``[B, C]``.

    With ``head="recam"`` there is also ``recam_head``, a bias-free 1x1 conv ``[C, K, 1, 1]`` trained
    by ReCAM's softmax loss. It is registered *before* ``head`` so that the last 1x1 conv in module
    order is always the main classifier (the CAM engine detects its head that way).

    ``spec`` is everything needed to rebuild the architecture (it goes into checkpoints);
    ``image_prep`` is how images become its input (set by training, recorded in checkpoints,
    restored by ``load_checkpoint``; None for a model that was never trained by camflow).
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        head: ClassifierHead,
        *,
        recam_head: nn.Conv2d | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(stages) != len(STAGES):
            raise ValueError(f"a CamClassifier needs exactly 5 stages, got {len(stages)}")
        for name, stage in zip(STAGES, stages):
            self.add_module(name, stage)
        if recam_head is not None:
            self.recam_head = recam_head
        self.head = head
        self.spec = dict(spec or {})
        self.image_prep: ImagePrep | None = None

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def head_kind(self) -> str:
        return self.spec.get("head", "gap")

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output map, ``{"stage1": ..., "stage5": ...}``."""
        maps: dict[str, torch.Tensor] = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            maps[name] = x
        return maps

    def forward(self, x: torch.Tensor, return_stages: bool = False):
        """Logits ``[B, C]``; with ``return_stages=True`` also the dict of stage maps."""
        maps = self.forward_stages(x)
        logits = self.head(maps["stage5"])
        return (logits, maps) if return_stages else logits


def image_prep_of(model: nn.Module, size: int | tuple[int, int]) -> ImagePrep:
    """The preparation ``model`` was trained with (from its checkpoint), else ``ImagePrep(size)``."""
    prep = getattr(model, "image_prep", None)
    return prep if isinstance(prep, ImagePrep) else ImagePrep(size)


def dense_prep_of(model: nn.Module, size: int | tuple[int, int]) -> ImagePrep:
    """How a dense model started from ``model`` (AffinityNet, the segmentation model) prepares
    images: ``model``'s normalisation at ``size``, the size its masks are made at. The
    classifier's own input size is its pretraining's; a dense model's output grid is a fixed
    fraction of its input, so it sees the image at the size of the masks it learns from."""
    prep = image_prep_of(model, size)
    return ImagePrep(size, mean=prep.mean, std=prep.std)


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def _assemble(
    stages: Sequence[nn.Module],
    channels: int,
    num_classes: int,
    head: str,
    tau: float,
    spec: dict[str, Any],
) -> CamClassifier:
    main = make_head(head, channels, num_classes, tau=tau)
    recam_head = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False) if head == "recam" else None
    return CamClassifier(stages, main, recam_head=recam_head, spec=spec)


def build(
    name: str,
    num_classes: int,
    *,
    head: str = "gap",
    output_stride: int = 32,
    pretrained: bool | str = False,
    tau: float = TAP_DEFAULT_TAU,
) -> CamClassifier:
    """A CAM classifier on torchvision backbone ``name`` (resnet18/50/101, vgg16, or any other).

    ``pretrained``: True for torchvision's ImageNet weights (random init with a logged warning when
    they cannot be fetched), or the path/URI of a torchvision state dict. To start from a camflow
    checkpoint use ``camflow.models.load_checkpoint`` (or ``load_weights_into`` on this model).
    ``tau`` is the TAP threshold (used by ``head="tap"`` only).
    """
    _check_num_classes(num_classes)
    make_head(head, 1, num_classes)  # validates head/num_classes before building a large backbone
    backbone = make_backbone(name, output_stride=output_stride, pretrained=pretrained)
    spec = {
        "name": name,
        "num_classes": num_classes,
        "head": head,
        "output_stride": output_stride,
        "tau": tau,
        "pretrained": backbone.pretrained,
    }
    return _assemble(backbone.stages, backbone.out_channels, num_classes, head, tau, spec)


def wrap(
    stages: Sequence[nn.Module],
    num_classes: int,
    *,
    out_channels: int | None = None,
    head: str = "gap",
    tau: float = TAP_DEFAULT_TAU,
    name: str = "custom",
) -> CamClassifier:
    """A CAM classifier on any five modules applied in order (e.g. pieces of a torchvision model).

    ``out_channels`` is the channel count of the last stage; measured with a dummy forward when
    not given. Checkpoints of wrapped models load with ``load_checkpoint(uri, model=...)``.
    """
    _check_num_classes(num_classes)
    stages = list(stages)
    if len(stages) != len(STAGES):
        raise ValueError(f"wrap() needs exactly 5 stages, got {len(stages)}")
    if out_channels is None:
        probe = nn.Sequential(*stages)
        was_training = probe.training
        probe.eval()  # the probe must not touch batch-norm running statistics
        with torch.no_grad():
            out_channels = int(probe(torch.zeros(1, 3, 64, 64)).shape[1])
        probe.train(was_training)
    spec = {"name": name, "num_classes": num_classes, "head": head, "output_stride": None,
            "tau": tau, "pretrained": False, "wrapped": True}
    return _assemble(stages, out_channels, num_classes, head, tau, spec)
