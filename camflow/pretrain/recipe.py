"""Pretraining a backbone on the source benchmark: the recipe, the run, the weights and their card.

The output is a torchvision-layout state dict in safetensors (``torchvision.models.resnet18(
num_classes=len(card["source"]["classes"])).load_state_dict(...)`` loads it strictly) and a JSON
card beside it (``x.card.json`` for ``x.safetensors``): the source classes and data hash, the
recipe, the epochs, the source-val metrics, the time, and the sha256 of the weights file.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors
from torch.utils.data import Dataset

from camflow import storage
from camflow.data.source import SourceBenchmark, SourceParams, SourceSplit, build_source
from camflow.models import load_checkpoint
from camflow.models.backbones import to_torchvision_state_dict
from camflow.models.pretrained import card_uri, weights_digest
from camflow.train.augment import eval_transform, train_transform
from camflow.train.config import TrainConfig
from camflow.train.loop import Runtime, train

__all__ = ["CARD_FORMAT", "PretrainConfig", "PretrainResult", "SourceDataset", "pretrain"]

log = logging.getLogger("camflow.pretrain")

CARD_FORMAT = 1
# Bump when the pretraining code changes what weights a recipe gives: cached backbones are keyed
# by it.
PRETRAIN_VERSION = 2


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a pretrained backbone: source data, backbone and recipe."""

    backbone: str = "resnet18"
    source: SourceParams = field(default_factory=SourceParams)
    # The fine-tuning resolution. 5 epochs keep a fresh make demo within 10 minutes. Longer
    # pretraining scores higher on the source (64 px: 4 epochs 0.62 in 203 s with rendering; 48 px:
    # 5 epochs 0.61 in 227 s, 7 epochs 0.79 in 300 s, 8 epochs 0.82): the time budget decides.
    image_size: int = 64
    epochs: int = 5
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 0.05
    min_scale: float = 0.8
    color_jitter: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.backbone.startswith(("resnet", "resnext", "wide_resnet")):
            raise ValueError(f"pretraining supports ResNet-family backbones, not {self.backbone!r}")
        self.train_config()  # validates the recipe fields

    def train_config(self) -> TrainConfig:
        """The recipe as a training run: AdamW with a OneCycle schedule, no flips (glyphs)."""
        return TrainConfig(
            model=self.backbone, image_size=self.image_size, min_scale=self.min_scale,
            hflip=False, color_jitter=self.color_jitter, epochs=self.epochs,
            eval_every=self.epochs, batch_size=self.batch_size, optimizer="adamw", lr=self.lr,
            weight_decay=self.weight_decay, schedule="onecycle", seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["source"] = self.source.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        values = dict(values)
        source = dict(values.pop("source", {}))
        source.pop("format", None)
        return cls(source=SourceParams(**source), **values)


@dataclass(frozen=True)
class PretrainResult:
    weights_uri: str
    card: dict[str, Any]


class SourceDataset(Dataset):
    """A split of the source benchmark as training items (``labels`` read without decoding)."""

    def __init__(self, split: SourceSplit, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.split = split
        self.transform = transform
        self.labels = split.labels.astype(np.float32)
        self.image_ids = [f"source_{i:06d}" for i in range(len(split))]

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = Image.fromarray(self.split.images[index])
        return {"image": self.transform(image), "labels": torch.from_numpy(self.labels[index])}


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="pretraining", dynamic_ncols=True)


def pretrain(
    config: PretrainConfig,
    out_uri: str,
    *,
    source: SourceBenchmark | None = None,
    progress: bool = False,
    extra_card: dict[str, Any] | None = None,
) -> PretrainResult:
    """Train ``config.backbone`` on the source benchmark; write weights to ``out_uri`` + a card."""
    if not out_uri.endswith(".safetensors"):
        raise ValueError(f"pretrained weights go to a .safetensors file, not {storage.redact(out_uri)}")
    started = time.monotonic()
    source = source or build_source(config.source)
    if source.params != config.source:
        raise ValueError("the given source benchmark was built with other parameters than the config's")
    recipe = config.train_config()
    train_ds = SourceDataset(source.train, train_transform(
        recipe.image_size, min_scale=recipe.min_scale, hflip=False, color_jitter=recipe.color_jitter))
    val_ds = SourceDataset(source.val, eval_transform(recipe.image_size))
    bar = _progress_bar(recipe.epochs * len(train_ds), progress)
    try:
        with tempfile.TemporaryDirectory(prefix="camflow-pretrain-") as folder:
            result = train(recipe, train_ds, val_ds, out_uri=folder, classes=list(source.classes),
                           runtime=Runtime(on_step=bar.update if bar is not None else None))
            model, _ = load_checkpoint(result.checkpoint_uri)
    finally:
        if bar is not None:
            bar.close()
    data = save_safetensors(to_torchvision_state_dict(model),
                            metadata={"format": "torchvision", "backbone": config.backbone})
    card = {
        "card_format": CARD_FORMAT,
        "backbone": config.backbone,
        "layout": "torchvision",
        "source": {"benchmark": "camflow source glyphs", "classes": list(source.classes),
                   "params": config.source.to_dict(), "data_hash": source.data_hash},
        "recipe": config.to_dict(),
        "pretrain_version": PRETRAIN_VERSION,
        "epochs": recipe.epochs,
        "best_epoch": result.best_epoch,
        "val": result.best_metrics,
        "seconds": round(time.monotonic() - started, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "weights_sha256": weights_digest(data),
        **(extra_card or {}),
    }
    storage.write_bytes(data, out_uri)
    storage.write_bytes((_json(card) + "\n").encode(), card_uri(out_uri))
    log.info("pretrained %s on the source benchmark in %.0f s: source-val mAP %.3f -> %s",
             config.backbone, card["seconds"], result.best_metrics.get("mAP", float("nan")),
             storage.redact(out_uri))
    return PretrainResult(out_uri, card)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1, sort_keys=True, default=float)
