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
    """The embedded preset for the embedded benchmark, the library defaults otherwise."""
    base = TrainConfig.embedded() if data["kind"] == "embedded" else TrainConfig()
    overrides = {k: training[k] for k in ("epochs", "batch_size", "lr", "optimizer", "schedule")
                 if training.get(k) is not None}
    return base.replace(model=model["backbone"], head=model["head"],
                        output_stride=model["output_stride"], pretrained=model["pretrained"],
                        proportion=proportion, seed=training["seed"], **overrides)


@task(name="train-classifier", **CACHED)
def train_classifier(model: dict[str, Any], training: dict[str, Any], data: dict[str, Any],
                     prepared: dict[str, Any], proportion: float, run_dir: str,
                     cluster: dict[str, Any]) -> dict[str, Any]:
    log = get_run_logger()
    if model.get("checkpoint"):
        meta = read_checkpoint_meta(model["checkpoint"])
        log.info("using the given checkpoint %s", storage.redact(model["checkpoint"]))
        return {"checkpoint": model["checkpoint"], "metrics": meta.get("metrics", {}), "seconds": 0.0}
    config = train_config(model, training, data, proportion)
    train_ds, val_ds = manifest_datasets(
        read_manifest(prepared["train_manifest"]), read_manifest(prepared["val_manifest"]),
        prepared["num_classes"], image_size=config.image_size, min_scale=config.min_scale,
        hflip=config.hflip, color_jitter=config.color_jitter)
    out = storage.join(run_dir, "models", f"p{proportion:g}")
    started = time.monotonic()
    distributed = cluster["address"] or cluster["workers"] > 1 or cluster["use_gpu"]
    if distributed:
        ray_for(cluster)
        result = train_distributed(config, train_ds, val_ds, out_uri=out,
                                   classes=prepared["classes"], num_workers=cluster["workers"],
                                   use_gpu=cluster["use_gpu"],
                                   cpus_per_worker=cluster["cpus_per_worker"])
    else:
        result = train(config, train_ds, val_ds, out_uri=out, classes=prepared["classes"])
    seconds = time.monotonic() - started
    log.info("proportion %g: best val mAP %.3f at epoch %d (%.0f s)", proportion,
             result.best_metrics.get("mAP", float("nan")), result.best_epoch, seconds)
    return {"checkpoint": result.checkpoint_uri, "metrics": result.best_metrics,
            "best_epoch": result.best_epoch, "seconds": seconds}
