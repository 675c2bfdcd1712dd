"""Prefect task: the segmentation model of one training run, trained on its train-split pseudo
masks and scored on the val split's true masks (cluster layer)."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from camflow import storage
from camflow.segment import SegInference, SegTraining
from cluster.connect import ClusterOptions
from cluster.segment import SegmentJob, train_segmenter
from tasks.common import RETRIED, ray_for


@task(name="train-segmenter", **RETRIED)
def segment_model(training: SegTraining, inference: SegInference, output_stride: int, method: str,
                  masks: dict[str, Any], prepared: dict[str, Any], checkpoint: str, run_dir: str,
                  cluster: ClusterOptions, *, image_size: int, label: str) -> dict[str, Any]:
    """DeepLabV3 on ``masks`` (``{"outputs", "run_id", "table"}``: where the pseudo masks are)."""
    log = get_run_logger()
    ray_for(cluster, output=run_dir)
    job = SegmentJob(output=masks["outputs"], run_id=masks["run_id"], method=method,
                     table=masks["table"], num_classes=prepared["num_classes"], training=training,
                     inference=inference, output_stride=output_stride, image_size=image_size,
                     storage_options=storage.options_for(masks["outputs"]))
    started = time.monotonic()
    out = storage.join(run_dir, "models", label, "segmenter.safetensors")
    # Ray Train's DDP on a cluster (as the classifier), one Ray task locally.
    workers = cluster.workers if cluster.distributed else 1
    meta = train_segmenter(job, prepared["train_manifest"], prepared["val_manifest"], checkpoint,
                           out, workers=workers, use_gpu=cluster.use_gpu,
                           cpus=cluster.cpus_per_worker)
    log.info("segmentation model (%s %s, %d training images): val mIoU %.3f on %d images "
             "(%.3f in one pass)", method, masks["table"], meta["train_images"],
             meta["val"]["mIoU"], meta["val_images"], meta["val_one_pass"]["mIoU"])
    return {"metrics": {"segment_val_mIoU": meta["val"]["mIoU"], "segment_val_IoU":
                        meta["val"]["IoU"],
                        "segment_val_mIoU_one_pass": meta["val_one_pass"]["mIoU"],
                        "segment_trained_on": masks["table"]},
            "method": method, "checkpoint": out, "seconds": time.monotonic() - started}
