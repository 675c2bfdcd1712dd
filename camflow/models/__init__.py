"""CAM classifiers: torchvision backbones cut into named stages, GAP/TAP/ReCAM heads, checkpoints.

>>> model = build("resnet18", num_classes=20)            # random init, GAP head
>>> logits = model(x)                                    # [B, 20]
>>> logits, maps = model(x, return_stages=True)          # maps["stage4"], maps["stage5"], ...
"""

from camflow.models.backbones import OUTPUT_STRIDES, make_backbone
from camflow.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from camflow.models.classifier import STAGES, CamClassifier, build, wrap
from camflow.models.heads import HEADS, TAP_DEFAULT_TAU, recam_loss

__all__ = [
    "HEADS",
    "OUTPUT_STRIDES",
    "STAGES",
    "TAP_DEFAULT_TAU",
    "CamClassifier",
    "CheckpointError",
    "build",
    "load_checkpoint",
    "make_backbone",
    "read_checkpoint_meta",
    "recam_loss",
    "save_checkpoint",
    "wrap",
]
