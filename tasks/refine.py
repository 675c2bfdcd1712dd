"""Prefect task: affinity refinement of one training run's train-split seeds (cluster layer)."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from camflow import storage
from camflow.refine import RefineOptions
from camflow.refine.train import AffinityTraining
from cluster.connect import ClusterOptions
from cluster.refine import RefineJob, run_refinement, train_affinity_net
from tasks.common import RETRIED, ray_for


# Not cached by inputs: the saved affinity net and the shard commit log make a rerun skip work.
@task(name="refine-masks", **RETRIED)
def refine_masks(options: RefineOptions, training: AffinityTraining, method: str,
                 generation: dict[str, Any], prepared: dict[str, Any], checkpoint: str,
                 run_dir: str, cluster: ClusterOptions, *, image_size: int,
                 shard_size: int = 64) -> dict[str, Any]:
    """AffinityNet on the confident seeds of ``method`` in ``generation`` (a generate-cams
    result of the train split), then ``refined_masks`` of every seeded training image."""
    log = get_run_logger()
    ray_for(cluster, output=run_dir)
    job = RefineJob(output=generation["outputs"], run_id=generation["run_id"], method=method,
                    num_classes=prepared["num_classes"], options=options, training=training,
                    shard_size=shard_size, image_size=image_size,
                    seed_bg_threshold=(generation["metrics"].get(method) or {}).get(
                        "mask_bg_threshold"),
                    storage_options=storage.options_for(generation["outputs"]))
    started = time.monotonic()
    affinity = storage.join(run_dir, "models", generation["run_id"], f"affinity-{method}.safetensors")
    trained = train_affinity_net(job, prepared["train_manifest"], checkpoint, affinity,
                                 use_gpu=cluster.use_gpu, cpus=cluster.cpus_per_worker)
    log.info("AffinityNet (%s seeds, %d images): loss %s", method, trained["images"],
             " -> ".join(f"{x:.3f}" for x in trained["history"]))
    result = run_refinement(job, prepared["train_manifest"], affinity, workers=cluster.workers,
                            use_gpu=cluster.use_gpu, cpus_per_worker=cluster.cpus_per_worker)
    seconds = time.monotonic() - started
    log.info("%s: refined masks of %s, mIoU %.3f; %d shards (%d skipped), %.0f s", result.run_id,
             method, result.metrics["refined_mask_mIoU"], result.shards_total,
             result.shards_skipped, seconds)
    return {"metrics": result.metrics, "method": method, "run_id": result.run_id,
            "affinity": affinity, "affinity_loss": trained["history"], "seconds": seconds}
