"""The typed options of BroadCAM's BLS and of CAM generation: maps, pseudo masks, boxes.

These frozen dataclasses are the one definition of each option and its default. The run
configuration (``flows.config``) uses them as its sections, so a YAML key, the object a task
receives and the argument the kernel reads are the same field. Each validates itself on
construction with a message naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from camflow.bls.estimator import ALPHA, STEP
from camflow.cams import METHODS, SCALES
from camflow.postprocess.boxes import BOX_PERCENTILE, BOX_TAU, Components, Method
from camflow.postprocess.masks import BG_ALPHA, BG_THRESHOLD, Background

__all__ = ["BLSOptions", "BoxOptions", "CamOptions", "GenerateOptions", "MaskOptions"]


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} {rule}, got {value!r}")


@dataclass(frozen=True)
class BLSOptions:
    """BroadCAM's BLS: the layers whose pooled features it is fitted on, its ridge penalty
    ``alpha`` and the features averaged by one enhancement node (``step``); without
    ``enhance`` it is a standardised ridge regression."""

    layers: tuple[str, ...] = ("stage4", "stage5")
    alpha: float = ALPHA
    step: int = STEP
    enhance: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.layers), "layers", "must name at least one layer", self.layers)
        _require(self.alpha > 0, "alpha", "must be > 0", self.alpha)
        _require(self.step >= 1, "step", "must be >= 1", self.step)


@dataclass(frozen=True)
class CamOptions:
    """Which maps are made and how: methods, their layers, test-time scales and flips.

    ``layers`` serve the single-layer methods, ``multi_layers`` the multi-layer ones (layercam;
    broadcam uses the layers its BLS was fitted on). ``seed_stride`` subsamples the stored seeds.
    """

    methods: tuple[str, ...] = ("broadcam", "cam", "gradcam", "layercam")
    layers: tuple[str, ...] = ("stage5",)
    multi_layers: tuple[str, ...] = ("stage4", "stage5")
    scales: tuple[float, ...] = SCALES
    flip: bool = True
    seed_stride: int = 4
    batch_size: int = 16

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown CAM method(s) {unknown}; known: {', '.join(sorted(METHODS))}")
        _require(len(set(self.methods)) == len(self.methods), "methods", "must be distinct",
                 self.methods)
        _require(bool(self.layers) and bool(self.multi_layers), "layers",
                 "and multi_layers must name at least one layer", (self.layers, self.multi_layers))
        _require(bool(self.scales) and all(s > 0 for s in self.scales), "scales",
                 "must be positive, at least one", self.scales)
        _require(self.seed_stride >= 1, "seed_stride", "must be >= 1", self.seed_stride)
        _require(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)


@dataclass(frozen=True)
class MaskOptions:
    """Seeds -> pseudo masks: the background score, optionally refined by a dense CRF.

    ``background="constant"`` scores the background ``bg_threshold`` everywhere; None chooses it
    per method, as the best of the seed sweep on ``calibration_images`` training images with
    masks (``BG_THRESHOLD`` where none has a mask). ``"power"`` uses (1 - max)^``bg_alpha``.
    """

    background: Background = "constant"
    bg_threshold: float | None = None
    bg_alpha: float = BG_ALPHA
    calibration_images: int = 64
    crf: bool = False

    def __post_init__(self) -> None:
        _require(self.bg_threshold is None or 0 <= self.bg_threshold <= 1, "bg_threshold",
                 "must lie in [0, 1]", self.bg_threshold)
        _require(self.bg_alpha > 0, "bg_alpha", "must be > 0", self.bg_alpha)
        _require(self.calibration_images >= 1, "calibration_images", "must be >= 1",
                 self.calibration_images)

    @property
    def calibrated(self) -> bool:
        """Whether the background score is chosen per method on training images."""
        return self.background == "constant" and self.bg_threshold is None

    @property
    def threshold(self) -> float:
        """The constant background score used where none was calibrated."""
        return BG_THRESHOLD if self.bg_threshold is None else self.bg_threshold


@dataclass(frozen=True)
class BoxOptions:
    """Normalised CAM -> boxes: threshold ``tau`` of the map's max (``max``) or of its
    ``percentile`` (``pas``); the largest component per class, or ``all`` of them."""

    method: Method = "max"
    tau: float = BOX_TAU
    percentile: float = BOX_PERCENTILE
    components: Components = "largest"

    def __post_init__(self) -> None:
        _require(0 < self.tau <= 1, "tau", "must lie in (0, 1]", self.tau)
        _require(0 < self.percentile <= 100, "percentile", "must lie in (0, 100]", self.percentile)


@dataclass(frozen=True)
class GenerateOptions:
    """Everything one shard's generation depends on, besides the model and the methods."""

    num_classes: int
    image_size: int = 112
    cam: CamOptions = field(default_factory=CamOptions)
    mask: MaskOptions = field(default_factory=MaskOptions)
    box: BoxOptions = field(default_factory=BoxOptions)

    def __post_init__(self) -> None:
        _require(self.num_classes >= 1, "num_classes", "must be >= 1", self.num_classes)
        _require(self.image_size >= 1, "image_size", "must be >= 1", self.image_size)
