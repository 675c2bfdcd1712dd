"""Prefect task: fit BroadCAM's BLS on the classifier's training subset with Ray feature actors."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from camflow import storage
from camflow.data.manifest import read_manifest
from camflow.data.subsets import take_subset
from camflow.options import BLSOptions
from cluster.connect import ClusterOptions
from cluster.features import ManifestShard, fit_bls_distributed
from cluster.generate import CheckpointModel
from tasks.common import CACHED, RETRIED, ray_for


@task(name="fit-broadcam", **CACHED, **RETRIED)
def fit_broadcam(bls: BLSOptions, prepared: dict[str, Any], checkpoint: str, proportion: float,
                 seed: int, image_size: int, run_dir: str, cluster: ClusterOptions,
                 shard_size: int = 256, label: str | None = None) -> dict[str, Any]:
    log = get_run_logger()
    ray_for(cluster)
    subset = take_subset(read_manifest(prepared["train_manifest"]), proportion, seed=seed).to_pylist()
    shards = [ManifestShard(subset[i:i + shard_size], prepared["num_classes"], size=image_size)
              for i in range(0, len(subset), shard_size)]
    started = time.monotonic()
    model = fit_bls_distributed(CheckpointModel(checkpoint), shards, bls.layers,
                                num_workers=cluster.workers, alpha=bls.alpha,
                                step=bls.step, enhance=bls.enhance,
                                num_cpus_per_worker=cluster.cpus_per_worker)
    uri = storage.join(run_dir, "bls", f"{label or f'p{proportion:g}'}.safetensors")
    model.save(uri)
    log.info("BLS on %d images: %d features, %d enhancement nodes per class (%.0f s)",
             len(subset), model.coef_.shape[0], model.nodes_per_class_, time.monotonic() - started)
    return {"bls": uri, "layers": list(bls.layers), "images": len(subset),
            "seconds": time.monotonic() - started}
