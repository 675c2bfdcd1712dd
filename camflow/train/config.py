"""Training configuration: one dataclass, validated up front, JSON-serialisable."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from camflow.models.backbones import OUTPUT_STRIDES
from camflow.models.heads import HEADS, TAP_DEFAULT_TAU

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine", "onecycle")


@dataclass
class TrainConfig:
    """Everything one classifier training run depends on.

    ``proportion`` (0, 1] selects a label-stratified subset of the training set with ``seed``.
    ``threads`` is the number of torch CPU threads per worker (None: the CPUs this process may use,
    divided among workers). ``amp`` only takes effect on CUDA.
    """

    model: str = "resnet18"
    head: str = "gap"
    output_stride: int = 32
    pretrained: bool | str = False
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

    @classmethod
    def embedded(cls, proportion: float = 1.0, **overrides: Any) -> TrainConfig:
        """Recommended defaults for the embedded benchmark (resnet18, random init, small CPU).

        Tuned to reach val mAP >= 0.90 on 100 % of the 2000 training images within minutes on a
        2-core CPU: reduced resolution, AdamW with a OneCycle schedule, channels_last. Batches
        of 32 cost 0.74x the CPU time per image of batches of 16 and reach the same mAP
        (bench/train_quality.py: 0.935 in 191 s against 0.931 in 271 s). Smaller proportions
        get proportionally more epochs (up to 5x) so they see more updates, validated about five
        times per run.
        """
        base_epochs = 12
        epochs = int(math.ceil(base_epochs * min(1.0 / proportion, 5.0))) if proportion > 0 else base_epochs
        preset: dict[str, Any] = dict(
            model="resnet18",
            head="gap",
            image_size=64,
            min_scale=0.8,
            hflip=False,  # digits: a mirrored 2 or 5 is not a digit the model will ever see
            color_jitter=0.2,
            epochs=epochs,
            eval_every=max(1, epochs // 5),
            batch_size=32,
            optimizer="adamw",
            lr=3e-3,
            weight_decay=0.05,  # the 100 % run overfits (train loss << val loss) without it
            schedule="onecycle",
            channels_last=True,
            proportion=proportion,
        )
        preset.update(overrides)
        return cls(**preset)
