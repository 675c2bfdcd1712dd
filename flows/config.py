"""The one configuration file of a camflow run (YAML, validated by pydantic).

Every field has a default: an empty file (or none) runs the embedded benchmark locally.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from camflow.data.source import SourceParams
from camflow.data.sources import DataOptions
from camflow.models import HEADS, OUTPUT_STRIDES
from camflow.models.pretrained import EMBEDDED
from camflow.options import BLSOptions, BoxOptions, CamOptions, MaskOptions
from camflow.pretrain import PretrainConfig
from camflow.refine import RefineOptions
from camflow.refine.train import AffinityTraining
from camflow.segment import SegInference, SegTraining
from camflow.segment.model import SEGMENT_STRIDES
from camflow.train import TrainConfig
from camflow.train.config import OPTIMIZERS, SCHEDULES
from cluster.connect import ClusterOptions


def _one_of(value: Any, allowed: Iterable[Any], what: str) -> Any:
    """``value`` if the library registers it (None passes: the default applies)."""
    allowed = tuple(allowed)
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(map(str, allowed))}")
    return value


# The library's registries that a config field's value must belong to, and how to name it.
_REGISTRIES: dict[str, tuple[Iterable[Any], str]] = {
    "head": (HEADS, "head"), "output_stride": (OUTPUT_STRIDES, "output stride"),
    "optimizer": (OPTIMIZERS, "optimizer"), "schedule": (SCHEDULES, "schedule"),
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DataConfig(DataOptions):
    """The dataset (camflow.data.sources.DataOptions)."""


class ModelConfig(Section):
    backbone: str = "resnet18"
    head: str = Field("gap", description=f"one of {', '.join(HEADS)}")
    output_stride: int | None = Field(
        None, description="default: the data's preset (the embedded benchmark's, else 32)")
    pretrained: bool | str | None = Field(
        None, description="false: random init; true or imagenet: torchvision's ImageNet weights "
        "(needs a network); embedded: camflow's backbone pretrained on the source benchmark "
        "(built once, cached under $CAMFLOW_CACHE); or the path/URI of a torchvision state dict. "
        "Default: embedded for the embedded benchmark, false otherwise")
    checkpoint: str | None = Field(None, description="start from this checkpoint instead of training")

    @field_validator("head", "output_stride")
    @classmethod
    def _registered(cls, value: Any, info: ValidationInfo) -> Any:
        return _one_of(value, *_REGISTRIES[info.field_name])

    @field_validator("pretrained")
    @classmethod
    def _pretrained_form(cls, value: bool | str | None) -> bool | str | None:
        if isinstance(value, str) and not value.strip():
            raise ValueError("model.pretrained must be false, true, imagenet, embedded or a path")
        return value


class PretrainSection(Section):
    """The source-pretrained backbone (model.pretrained: embedded); defaults are the recipe's."""

    epochs: int = Field(PretrainConfig.epochs, ge=1)
    image_size: int = Field(PretrainConfig.image_size, ge=32)
    batch_size: int = Field(PretrainConfig.batch_size, ge=2)
    lr: float = Field(PretrainConfig.lr, gt=0)
    seed: int = PretrainConfig.seed
    source_train: int = Field(SourceParams.train, ge=1, description="source training images")
    source_val: int = Field(SourceParams.val, ge=1, description="source validation images")
    source_seed: int = SourceParams.seed

    def recipe(self, backbone: str) -> PretrainConfig:
        source = SourceParams(seed=self.source_seed, train=self.source_train, val=self.source_val)
        return PretrainConfig(backbone=backbone, source=source, epochs=self.epochs,
                              image_size=self.image_size, batch_size=self.batch_size, lr=self.lr,
                              seed=self.seed)


class TrainConfigSection(Section):
    proportions: list[float] = Field(default_factory=lambda: [0.05, 1.0])
    epochs: int | None = Field(None, ge=1, description="default: the preset of the data")
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    optimizer: str | None = Field(None, description=f"one of {', '.join(OPTIMIZERS)}")
    schedule: str | None = Field(None, description=f"one of {', '.join(SCHEDULES)}")
    seed: int = 0

    @field_validator("optimizer", "schedule")
    @classmethod
    def _registered(cls, value: Any, info: ValidationInfo) -> Any:
        return _one_of(value, *_REGISTRIES[info.field_name])

    @field_validator("proportions")
    @classmethod
    def _in_unit_interval(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("train.proportions must name at least one proportion")
        bad = [p for p in value if not 0 < p <= 1]
        if bad:
            raise ValueError(f"train.proportions must lie in (0, 1], got {bad}")
        return value


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class BLSConfig(BLSOptions):
    """BroadCAM's BLS (camflow.options.BLSOptions)."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CamsConfig(CamOptions):
    """The CAM options themselves (camflow.options.CamOptions), and which split gets seeds in
    shards of how many images."""

    split: Literal["train", "val"] = Field("val", description="the split whose seeds are made")
    shard_size: int = Field(64, ge=1)


class PostprocessConfig(Section):
    mask: MaskOptions = MaskOptions()
    box: BoxOptions = BoxOptions()


class SweepConfig(Section):
    proportions: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2],
                             description="training seeds (subset and initialisation) per proportion")
    seeds_up_to: float = Field(0.1, gt=0, le=1, description="larger proportions use seeds[0] only")
    concurrent: int | None = Field(None, ge=1, description="training runs (proportion, seed) "
                                   "that go at once; default: as many as the cluster has room "
                                   "for, one at a time where training runs locally")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError("sweep.seeds must name distinct seeds, at least one")
        return value


class RefineSection(Section):
    """Affinity refinement of the training split's seeds (camflow.refine): AffinityNet trained
    on their confident labels, then a random walk; needs ``cams.split: train``."""

    enabled: bool = False
    method: str | None = Field(None, description="the method whose seeds are refined "
                               "(default: broadcam when made, else the first of cams.methods)")
    options: RefineOptions = RefineOptions()
    training: AffinityTraining = AffinityTraining()


class SegmentSection(Section):
    """The segmentation model (camflow.segment): DeepLabV3 trained on the training split's
    pseudo masks of ``refine.method`` (refined when ``refine.enabled``), scored on val masks;
    needs ``cams.split: train``."""

    enabled: bool = False
    output_stride: int = 16
    training: SegTraining = SegTraining()
    inference: SegInference = SegInference()

    @field_validator("output_stride")
    @classmethod
    def _stride(cls, value: int) -> int:
        return _one_of(value, SEGMENT_STRIDES, "segmentation output stride")


class ScheduleConfig(Section):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


class RunConfig(Section):
    name: str = "camflow"
    output: str = Field("runs", description="local folder or s3://bucket/prefix")
    run_id: str | None = Field(None, description="default: <name>-<UTC timestamp>")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainSection = PretrainSection()
    train: TrainConfigSection = TrainConfigSection()
    bls: BLSConfig = BLSConfig()
    cams: CamsConfig = CamsConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    cluster: ClusterOptions = ClusterOptions()
    sweep: SweepConfig = SweepConfig()
    refine: RefineSection = RefineSection()
    segment: SegmentSection = SegmentSection()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _refinable(self) -> RunConfig:
        if not (self.refine.enabled or self.segment.enabled):
            return self
        stage = "refine" if self.refine.enabled else "segment"
        if self.cams.split != "train":
            raise ValueError(f"{stage}.enabled needs cams.split: train (the seeds of the images a "
                             "segmentation model learns from)")
        if self.refine.method is not None and self.refine.method not in self.cams.methods:
            raise ValueError(f"refine.method {self.refine.method!r} is not one of cams.methods "
                             f"{list(self.cams.methods)}")
        if self.refined_method == "recam":
            raise ValueError("refine.method: recam's seeds are a run of their own; refine another")
        return self

    @property
    def refined_method(self) -> str:
        """The method whose seeds ``refine`` refines."""
        methods = [m for m in self.cams.methods if m != "recam"] or list(self.cams.methods)
        return self.refine.method or ("broadcam" if "broadcam" in methods else methods[0])

    @model_validator(mode="before")
    @classmethod
    def _data_defaults(cls, values: Any) -> Any:
        """Fill the defaults that depend on the data: the embedded benchmark's backbone."""
        if not isinstance(values, dict):
            return values
        model = values.get("model")
        if model is None:
            model = {}
        if not isinstance(model, dict) or model.get("pretrained") is not None:
            return values
        data = values.get("data") or {}
        kind = data.get("kind", "embedded") if isinstance(data, dict) else "embedded"
        return {**values, "model": {**model, "pretrained": EMBEDDED if kind == "embedded" else False}}


    def train_config(self, proportion: float, seed: int, pretrained: bool | str) -> TrainConfig:
        """The library's training config of one run: the embedded preset for the embedded
        benchmark, the library defaults otherwise, with what this file sets on top.

        ``pretrained`` is ``model.pretrained`` resolved (a file for the source-pretrained backbone).
        """
        base = (TrainConfig.embedded(proportion, pretrained=pretrained)
                if self.data.kind == "embedded"
                else TrainConfig(pretrained=pretrained, proportion=proportion))
        overrides = {k: getattr(self.train, k)
                     for k in ("epochs", "batch_size", "lr", "optimizer", "schedule")
                     if getattr(self.train, k) is not None}
        if self.model.output_stride is not None:
            overrides["output_stride"] = self.model.output_stride
        return base.replace(model=self.model.backbone, head=self.model.head, seed=seed,
                            **overrides)


class ConfigError(ValueError):
    """A config problem, worded for the user: one line and a hint."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _describe(error: ValidationError, source: str) -> ConfigError:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return ConfigError(f"{source}: unknown key '{where}'",
                           "check the spelling; `camflow config` prints every key with its default")
    return ConfigError(f"{source}: {where}: {first['msg']}",
                       "`camflow config` prints every key with its default")


def parse_config(data: dict[str, Any] | None, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as exc:
        raise _describe(exc, source) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {path} does not exist",
                              "pass a YAML file, or no file for the defaults")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}".splitlines()[0],
                              "check indentation and quoting") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections", "see `camflow config`")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_config(data, source)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
