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
from cluster.connect import ClusterOptions
from cluster.train import train_distributed
from tasks.common import CACHED, ray_for


def _datasets(config: TrainConfig, prepared: dict[str, Any]):
    return manifest_datasets(
        read_manifest(prepared["train_manifest"]), read_manifest(prepared["val_manifest"]),
        prepared["num_classes"], image_size=config.image_size, min_scale=config.min_scale,
        hflip=config.hflip, color_jitter=config.color_jitter)


def _fit(config: TrainConfig, prepared: dict[str, Any], out: str,
         cluster: ClusterOptions) -> tuple[Any, float]:
    """Train locally, or with Ray Train when a cluster, several workers or GPUs are configured."""
    train_ds, val_ds = _datasets(config, prepared)
    started = time.monotonic()
    if cluster.distributed:
        ray_for(cluster, output=out)  # rank 0 writes the checkpoint where it runs
        result = train_distributed(config, train_ds, val_ds, out_uri=out,
                                   classes=prepared["classes"], num_workers=cluster.workers,
                                   use_gpu=cluster.use_gpu,
                                   cpus_per_worker=cluster.cpus_per_worker)
    else:
        result = train(config, train_ds, val_ds, out_uri=out, classes=prepared["classes"])
    return result, time.monotonic() - started


def _summary(result, seconds: float) -> dict[str, Any]:
    return {"checkpoint": result.checkpoint_uri, "metrics": result.best_metrics,
            "best_epoch": result.best_epoch, "seconds": seconds}


@task(name="train-classifier", **CACHED)
def train_classifier(config: TrainConfig, prepared: dict[str, Any], run_dir: str,
                     cluster: ClusterOptions, label: str, checkpoint: str | None = None
                     ) -> dict[str, Any]:
    """One classifier as ``config`` says (its proportion and seed pick the subset), or the given
    ``checkpoint`` as it is."""
    log = get_run_logger()
    if checkpoint:
        meta = read_checkpoint_meta(checkpoint)
        log.info("using the given checkpoint %s", storage.redact(checkpoint))
        return {"checkpoint": checkpoint, "metrics": meta.get("metrics", {}), "seconds": 0.0}
    result, seconds = _fit(config, prepared, storage.join(run_dir, "models", label), cluster)
    log.info("%s: val mAP %.3f at epoch %d (%.0f s)", label,
             result.best_metrics.get("mAP", float("nan")), result.best_epoch, seconds)
    return _summary(result, seconds)


@task(name="train-recam", **CACHED)
def train_recam(checkpoint: str, config: TrainConfig, prepared: dict[str, Any], run_dir: str,
                cluster: ClusterOptions, label: str) -> dict[str, Any]:
    """ReCAM's second stage: the trained classifier goes on with BCE + ReCAM's loss."""
    log = get_run_logger()
    config = config.recam_stage(checkpoint)
    label = f"{label}-recam"
    result, seconds = _fit(config, prepared, storage.join(run_dir, "models", label), cluster)
    log.info("%s: val mAP %.3f after %d ReCAM epochs (%.0f s)", label,
             result.best_metrics.get("mAP", float("nan")), config.epochs, seconds)
    return _summary(result, seconds)
