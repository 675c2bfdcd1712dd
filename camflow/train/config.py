"""Training configuration: one dataclass, validated up front, JSON-serialisable."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from camflow.models.backbones import OUTPUT_STRIDES
from camflow.models.heads import HEADS, TAP_DEFAULT_TAU

__all__ = ["KEEP", "OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine", "onecycle")
KEEP = ("best", "last")  # which epoch's weights a run keeps: best val mAP, or the last
# Epochs of the embedded presets at 100 % (smaller proportions get up to 5x as many).
SCRATCH_EPOCHS = 12
FINETUNE_EPOCHS = 6
# Output stride of the fine-tuned preset: at 112 px, stage5 maps of 7 x 7 instead of 4 x 4.
FINETUNE_STRIDE = 16


@dataclass
class TrainConfig:
    """Everything one classifier training run depends on.

    ``proportion`` (0, 1] selects a label-stratified subset of the training set with ``seed``.
    ``threads`` is the number of torch CPU threads per worker (None: the CPUs this process may use,
    divided among workers). ``amp``: mixed precision, float16 on CUDA and bfloat16 on CPUs that
    run it natively (see camflow.precision.autocast_dtype); float32 elsewhere.
    """

    model: str = "resnet18"
    head: str = "gap"
    output_stride: int = 32
    pretrained: bool | str = False  # False, True / "imagenet", or a torchvision state-dict file
    init_checkpoint: str | None = None  # a camflow checkpoint to start from (backbone + main head)
    tau: float = TAP_DEFAULT_TAU
    recam_weight: float = 1.0  # lambda of ReCAM's softmax loss next to BCE (1.0 in the reference)

    image_size: int = 112
    min_scale: float = 0.5  # random-resized-crop area range [min_scale, 1]
    hflip: bool = True
    color_jitter: float = 0.3

    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    # lr x this for loaded weights (the stages; with init_checkpoint the main head too); new heads: lr
    backbone_lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0

    proportion: float = 1.0
    seed: int = 0
    num_workers: int = 0  # DataLoader processes
    threads: int | None = None
    amp: bool = True
    channels_last: bool = True
    f1_threshold: float = 0.5
    eval_every: int = 1  # validate every k epochs (and always after the last one)
    keep: str = "best"  # one of KEEP
    eval_batch_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, recorded in checkpoints

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"TrainConfig.{name} {rule}, got {getattr(self, name)!r}")

        if self.head not in HEADS:
            raise bad("head", f"must be one of {HEADS}")
        if self.output_stride not in OUTPUT_STRIDES:
            raise bad("output_stride", f"must be one of {OUTPUT_STRIDES}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"must be one of {SCHEDULES}")
        if self.keep not in KEEP:
            raise bad("keep", f"must be one of {KEEP}")
        if not (isinstance(self.proportion, (int, float)) and 0 < self.proportion <= 1):
            raise bad("proportion", "must be in (0, 1]")
        for name in ("epochs", "batch_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be a positive integer")
        if self.image_size < 32:
            raise bad("image_size", "must be at least 32 pixels")
        if not self.lr > 0:
            raise bad("lr", "must be positive")
        if not self.backbone_lr_scale >= 0:
            raise bad("backbone_lr_scale", "must be >= 0")
        if not 0 < self.min_scale <= 1:
            raise bad("min_scale", "must be in (0, 1]")
        if self.weight_decay < 0 or self.recam_weight < 0 or self.color_jitter < 0:
            raise ValueError("TrainConfig: weight_decay, recam_weight and color_jitter must be >= 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise bad("label_smoothing", "must be in [0, 0.5)")
        if self.threads is not None and self.threads < 1:
            raise bad("threads", "must be None or >= 1")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise bad("eval_every", "must be a positive integer")
        if self.num_workers < 0:
            raise bad("num_workers", "must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def recam_stage(self, checkpoint: str) -> TrainConfig:
        """ReCAM's second stage after this run: from its ``checkpoint``, BCE + ReCAM's loss.

        As in ReCAM's reference code: the trained CAM classifier is the start, the new ReCAM
        head learns at this run's lr and everything else at 0.1x, ReCAM's loss weighs 1.0, and
        the stage is short (a third of this run's epochs; the reference trains 4 after 5).
        """
        epochs = max(1, int(math.ceil(self.epochs / 3)))
        return self.replace(head="recam", init_checkpoint=checkpoint, pretrained=False,
                            backbone_lr_scale=0.1, recam_weight=1.0, epochs=epochs,
                            eval_every=epochs)

    @classmethod
    def embedded(cls, proportion: float = 1.0, *, pretrained: bool | str = False,
                 **overrides: Any) -> TrainConfig:
        """Recommended defaults for the embedded benchmark (resnet18, small CPU).

        From random init (``pretrained=False``): AdamW lr 3e-3 with OneCycle, 12 epochs at 100 %
        and proportionally more for smaller proportions (up to 5x). It reaches val mAP 0.935 at
        100 % but stays near chance at 5 % (bench/train_quality.py).

        Fine-tuning a pretrained backbone (a file, or True for ImageNet): the new head learns at
        lr 1e-2 and the backbone at 0.1x that; 6 epochs at 100 % (dev mAP 0.961, against 0.965
        with 12 in twice the time), 6 / proportion below, at most 60. Output stride 16
        (bench/cam_resolution.py, on training images: seed mIoU of cam, gradcam and layercam
        0.37 / 0.35 / 0.36 at 100 % against 0.25 / 0.21 / 0.25 at stride 32, for 1.5x the
        training and 1.6x the CAM time; stride 8 reached 0.42 / 0.40 / 0.41 at 100 % but no
        more than 16 at 5 %, for 2-3x the training and 5.5x the CAM time: beyond the budget). Chosen on *training* images only: the runs of
        bench/finetune_choice.py train on proportions of the first 1600 training images and
        score on the other 400 (at 5 % / 1 %, two seeds, dev mAP 0.60 / 0.36 against 0.57 / 0.34
        for lr 3e-3 with 0.3x, and 0.55 / 0.30 for a uniform 3e-3).

        Both train at 64 px (the 112 px images resized: 0.33x the cost per step) without flips
        (a mirrored 2 or 5 is no digit) and keep the last epoch, so the validation split that
        the CAMs are scored on chooses nothing.
        """
        inverse = 1.0 / proportion if proportion > 0 else 1.0
        preset: dict[str, Any] = dict(
            model="resnet18", head="gap", image_size=64, min_scale=0.8, hflip=False,
            color_jitter=0.2, batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0.05,
            schedule="onecycle", channels_last=True, proportion=proportion, pretrained=pretrained,
            keep="last",
        )
        if pretrained:
            # About the same number of image steps at every proportion, at most 60 epochs.
            epochs = min(int(math.ceil(FINETUNE_EPOCHS * inverse)), 60)
            preset.update(lr=1e-2, backbone_lr_scale=0.1, output_stride=FINETUNE_STRIDE)
        else:
            epochs = int(math.ceil(SCRATCH_EPOCHS * min(inverse, 5.0)))
        # keep="last": validation chooses nothing, so it runs once, after the last epoch.
        preset.update(epochs=epochs, eval_every=epochs)
        preset.update(overrides)
        return cls(**preset)
