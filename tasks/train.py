"""Prefect task: train the classifier on one training proportion (locally or with Ray Train)."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from camflow import storage
from camflow.data.manifest import read_manifest
from camflow.models import read_checkpoint_meta
from camflow.train import TrainConfig, train
from camflow.train.data import manifest_datasets
from cluster.train import train_distributed
from tasks.common import CACHED, ray_for


def train_config(model: dict[str, Any], training: dict[str, Any], data: dict[str, Any],
                 proportion: float) -> TrainConfig:
    """The embedded preset for the embedded benchmark, the library defaults otherwise.

    ``model["pretrained"]`` is already resolved (a file for the source-pretrained backbone).
    """
    pretrained = model["pretrained"]
    base = (TrainConfig.embedded(proportion, pretrained=pretrained) if data["kind"] == "embedded"
            else TrainConfig(pretrained=pretrained, proportion=proportion))
    overrides = {k: training[k] for k in ("epochs", "batch_size", "lr", "optimizer", "schedule")
                 if training.get(k) is not None}
    if model.get("output_stride") is not None:
        overrides["output_stride"] = model["output_stride"]
    return base.replace(model=model["backbone"], head=model["head"], seed=training["seed"],
                        **overrides)


def _datasets(config: TrainConfig, prepared: dict[str, Any]):
    return manifest_datasets(
        read_manifest(prepared["train_manifest"]), read_manifest(prepared["val_manifest"]),
        prepared["num_classes"], image_size=config.image_size, min_scale=config.min_scale,
        hflip=config.hflip, color_jitter=config.color_jitter)


def _fit(config: TrainConfig, prepared: dict[str, Any], out: str,
         cluster: dict[str, Any]) -> tuple[Any, float]:
    """Train locally, or with Ray Train when a cluster, several workers or GPUs are configured."""
    train_ds, val_ds = _datasets(config, prepared)
    started = time.monotonic()
    if cluster["address"] or cluster["workers"] > 1 or cluster["use_gpu"]:
        ray_for(cluster)
        result = train_distributed(config, train_ds, val_ds, out_uri=out,
                                   classes=prepared["classes"], num_workers=cluster["workers"],
                                   use_gpu=cluster["use_gpu"],
                                   cpus_per_worker=cluster["cpus_per_worker"])
    else:
        result = train(config, train_ds, val_ds, out_uri=out, classes=prepared["classes"])
    return result, time.monotonic() - started


def _summary(result, seconds: float) -> dict[str, Any]:
    return {"checkpoint": result.checkpoint_uri, "metrics": result.best_metrics,
            "best_epoch": result.best_epoch, "seconds": seconds}


@task(name="train-classifier", **CACHED)
def train_classifier(model: dict[str, Any], training: dict[str, Any], data: dict[str, Any],
                     prepared: dict[str, Any], proportion: float, run_dir: str,
                     cluster: dict[str, Any], seed: int | None = None,
                     label: str | None = None) -> dict[str, Any]:
    """One classifier on ``proportion`` of the training images (``seed``: subset and init)."""
    log = get_run_logger()
    if model.get("checkpoint"):
        meta = read_checkpoint_meta(model["checkpoint"])
        log.info("using the given checkpoint %s", storage.redact(model["checkpoint"]))
        return {"checkpoint": model["checkpoint"], "metrics": meta.get("metrics", {}), "seconds": 0.0}
    config = train_config(model, {**training, "seed": training["seed"] if seed is None else seed},
                          data, proportion)
    label = label or f"p{proportion:g}"
    result, seconds = _fit(config, prepared, storage.join(run_dir, "models", label), cluster)
    log.info("%s: val mAP %.3f at epoch %d (%.0f s)", label,
             result.best_metrics.get("mAP", float("nan")), result.best_epoch, seconds)
    return _summary(result, seconds)


@task(name="train-recam", **CACHED)
def train_recam(checkpoint: str, model: dict[str, Any], training: dict[str, Any],
                data: dict[str, Any], prepared: dict[str, Any], proportion: float, run_dir: str,
                cluster: dict[str, Any], seed: int | None = None,
                label: str | None = None) -> dict[str, Any]:
    """ReCAM's second stage: the trained classifier goes on with BCE + ReCAM's loss."""
    log = get_run_logger()
    base = train_config(model, {**training, "seed": training["seed"] if seed is None else seed},
                        data, proportion)
    config = base.recam_stage(checkpoint)
    label = f"{label or f'p{proportion:g}'}-recam"
    result, seconds = _fit(config, prepared, storage.join(run_dir, "models", label), cluster)
    log.info("%s: val mAP %.3f after %d ReCAM epochs (%.0f s)", label,
             result.best_metrics.get("mAP", float("nan")), config.epochs, seconds)
    return _summary(result, seconds)
