"""Prefect task: stream seeds, pseudo masks and boxes of every method to Parquet (cluster layer)."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import pyarrow.compute as pc
from prefect import get_run_logger, task

from camflow import storage
from camflow.bls import BLS
from camflow.data.manifest import read_manifest
from camflow.generate import CamMethod
from camflow.options import BoxOptions, CamOptions, GenerateOptions, MaskOptions
from cluster.connect import ClusterOptions
from cluster.generate import (
    CheckpointModel,
    GenerationJob,
    calibrate_bg_thresholds,
    run_generation,
)
from tasks.common import RETRIED, ray_for


def cam_methods(cams: CamOptions, bls_result: dict[str, Any] | None) -> tuple[CamMethod, ...]:
    methods = []
    for name in cams.methods:
        if name == "broadcam":
            if bls_result is None:
                raise ValueError("broadcam needs a fitted BLS (the fit-broadcam stage)")
            weights = BLS.load(bls_result["bls"]).coef_
            methods.append(CamMethod(name, tuple(bls_result["layers"]), weights=weights))
        elif name == "layercam":
            methods.append(CamMethod(name, cams.multi_layers))
        elif name == "recam":
            methods.append(CamMethod(name, cams.layers, head_attr="recam_head"))
        else:
            methods.append(CamMethod(name, cams.layers))
    return tuple(methods)


def calibration_split(split: str) -> str:
    """The split whose masks choose the background score of ``split``'s pseudo masks: never the
    split being scored (its seeds would pick their own best threshold)."""
    return "val" if split == "train" else "train"


def _calibrate(job: GenerationJob, prepared: dict[str, Any], checkpoint: str,
               cluster: ClusterOptions, split: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Per method, the best background score on the first images with masks of the other
    split; and which images those were."""
    source = calibration_split(split)
    manifest = read_manifest(prepared[f"{source}_manifest"])
    # Only the rows used become Python records: a manifest may hold millions.
    masked = manifest.filter(pc.not_equal(manifest["mask_uri"], ""))  # null rows dropped too
    with_masks = masked.slice(0, job.options.mask.calibration_images).to_pylist()
    chosen_on = {"split": source, "images": len(with_masks)}
    if not with_masks:
        return {}, chosen_on
    return calibrate_bg_thresholds(job, with_masks, CheckpointModel(checkpoint),
                                   use_gpu=cluster.use_gpu, cpus=cluster.cpus_per_worker), chosen_on


# Not cached by inputs: the shard commit log already makes a rerun skip finished shards.
@task(name="generate-cams", **RETRIED)
def generate_cams(cams: CamOptions, mask: MaskOptions, box: BoxOptions, prepared: dict[str, Any],
                  checkpoint: str, bls_result: dict[str, Any] | None, proportion: float,
                  image_size: int, run_dir: str, cluster: ClusterOptions, *, split: str = "val",
                  shard_size: int = 64, label: str | None = None) -> dict[str, Any]:
    """Seeds, masks and boxes of ``split`` for every method of ``cams``, in shards."""
    log = get_run_logger()
    ray_for(cluster, output=run_dir)  # the finishers write the shards where they run
    options = GenerateOptions(num_classes=prepared["num_classes"], image_size=image_size,
                              cam=cams, mask=mask, box=box)
    job = GenerationJob(output=storage.join(run_dir, "outputs"), run_id=label or f"p{proportion:g}",
                        methods=cam_methods(cams, bls_result), options=options,
                        shard_size=shard_size)
    started = time.monotonic()
    calibration = None
    if mask.calibrated:
        thresholds, calibration = _calibrate(job, prepared, checkpoint, cluster, split)
        job = dataclasses.replace(job, bg_thresholds=thresholds)
        log.info("pseudo-mask background scores, chosen on %d %s images: %s",
                 calibration["images"], calibration["split"], thresholds or "none calibrated")
    # The manifest's URI: the driver reads its footer only, the decoders their own rows.
    result = run_generation(job, prepared[f"{split}_manifest"], CheckpointModel(checkpoint),
                            workers=cluster.workers, use_gpu=cluster.use_gpu,
                            gpu_fraction=cluster.gpu_fraction,
                            cpus_per_worker=cluster.cpus_per_worker,
                            decoders=cluster.decoders, finishers=cluster.finishers,
                            progress=sys.stderr.isatty())
    seconds = time.monotonic() - started
    log.info("%s: %d shards (%d skipped), %d rejects, %.0f s", job.run_id,
             result.shards_total, result.shards_skipped, result.rejects, seconds)
    return {"metrics": result.metrics, "shards": result.shards_total, "rejects": result.rejects,
            "outputs": job.output, "run_id": job.run_id, "seconds": seconds, "split": split,
            "calibration": calibration}
