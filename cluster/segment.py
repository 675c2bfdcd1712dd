"""The segment stage on Ray: DeepLabV3 trained on the training split's pseudo masks (refined ones
when the run refines), scored on the val split's true masks, in one Ray task (a GPU when the
cluster has one). A model already trained for the same job is kept, so a rerun costs nothing; when
only its inference changed, it is scored again without training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from camflow import storage
from camflow.data.manifest import read_manifest
from camflow.generate import decode_records
from camflow.models.checkpoint import load_checkpoint
from camflow.models.classifier import dense_prep_of
from camflow.postprocess.png import decode_label_png
from camflow.segment import (
    MaskItems,
    SegInference,
    SegTraining,
    fit_segmenter,
    load_segmenter,
    save_segmenter,
    score_segmenter,
)
from camflow.segment.checkpoint import read_segmenter_meta
from camflow.segment.model import segmenter_from_classifier
from camflow.shards import ShardStore
from camflow.train.dense import pixel_items
from cluster.connect import one_task, same_job, torch_threads_for, worker_cpus

log = logging.getLogger("camflow.cluster")

__all__ = ["SegmentJob", "train_segmenter"]


@dataclass(frozen=True)
class SegmentJob:
    """Train on table ``table`` of run ``run_id`` / ``method`` under ``output``; score on val."""

    output: str
    run_id: str
    method: str
    table: str  # "refined_masks" or "masks"
    num_classes: int
    training: SegTraining = SegTraining()
    inference: SegInference = SegInference()  # how val is scored; not part of the key
    output_stride: int = 16
    image_size: int = 112  # the model's input: the size the masks are made at
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def key(self) -> dict[str, Any]:
        return {"run": self.run_id, "method": self.method, "table": self.table,
                "output_stride": self.output_stride, "image_size": self.image_size,
                "training": dataclasses.asdict(self.training)}


def _records(manifest: str, options: dict[str, Any] | None) -> list[dict[str, Any]]:
    return read_manifest(manifest, storage_options=options).to_pylist()


def _train_items(job: SegmentJob, manifest: str, prep: Any) -> MaskItems:
    store = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
    masks = {r["image_id"]: r for r in store.read(job.table, job.method).to_pylist()}
    images, _ = decode_records(_records(manifest, job.storage_options),
                               storage_options=job.storage_options)

    def mask(image_id: str, pixels: np.ndarray) -> torch.Tensor | None:
        if image_id not in masks:
            return None
        decoded = decode_label_png(masks[image_id]["mask_png"]["bytes"], name=image_id)
        grid = F.interpolate(torch.from_numpy(decoded.copy())[None, None].float(),
                             size=pixels.shape[:2], mode="nearest")[0, 0]
        return grid.to(torch.uint8)

    return pixel_items(((im.image_id, im.pixels) for im in images), prep, mask)


def _fit_and_save(job: SegmentJob, train_manifest: str, val_manifest: str, classifier: str,
                  out: str, device: torch.device, *, rank: int = 0, workers: int = 1,
                  **distributed: Any) -> dict[str, Any] | None:
    """Train (each rank on its share of the batches), then rank 0 scores on val and saves."""
    torch.manual_seed(job.training.seed)
    model_cls, meta_cls = load_checkpoint(classifier, storage_options=job.storage_options)
    prep = dense_prep_of(model_cls, job.image_size)
    items = _train_items(job, train_manifest, prep)
    if not len(items):
        raise ValueError(f"run {job.run_id}: no {job.table} of {job.method} to train on")
    model = segmenter_from_classifier(model_cls, job.num_classes + 1,
                                      output_stride=job.output_stride)
    model.image_prep = prep
    started = time.monotonic()
    history = fit_segmenter(model, items, job.training, device=device, **distributed)
    seconds = time.monotonic() - started
    if rank != 0:
        return None
    meta = {"key": job.key(), "classes": meta_cls.get("classes"), "history": history,
            "train_images": len(items), "seconds": seconds, "workers": workers}
    return _score_and_save(job, model, meta, val_manifest, out, device)


def _score_and_save(job: SegmentJob, model: torch.nn.Module, meta: dict[str, Any],
                    val_manifest: str, out: str, device: torch.device) -> dict[str, Any]:
    """Score on val with the job's inference, and with one pass beside it (what the inference
    adds is then in the metrics); save the model with its meta; the meta as JSON."""
    prep = model.image_prep
    val, _ = decode_records(_records(val_manifest, job.storage_options),
                            num_classes=job.num_classes, storage_options=job.storage_options)
    scored = [im for im in val if im.gt_mask is not None]
    images = [prep(Image.fromarray(im.pixels)) for im in scored]
    truths = [torch.from_numpy(im.gt_mask) for im in scored]
    ids = [im.image_id for im in scored]

    def score(inference: SegInference) -> dict[str, Any]:
        if not scored:
            return {"mIoU": float("nan"), "IoU": []}
        got = score_segmenter(model, images, truths, ids, inference=inference, device=device)
        return {"mIoU": got["mIoU"], "IoU": got["IoU"]}

    one_pass = SegInference.single()
    val_scores = score(job.inference)
    meta = {**meta, "val_images": len(scored), "inference": dataclasses.asdict(job.inference),
            "val": val_scores,
            "val_one_pass": val_scores if job.inference == one_pass else score(one_pass)}
    save_segmenter(model.cpu(), out, meta, storage_options=job.storage_options)
    return json.loads(json.dumps(meta, default=float))


def _rescore_task(job: SegmentJob, val_manifest: str, out: str, threads: int, use_gpu: bool
                  ) -> dict[str, Any]:
    """A saved model of this job scored again with the job's inference: no training."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    model, meta = load_segmenter(out, storage_options=job.storage_options)
    meta = {k: v for k, v in meta.items() if k not in ("model", "image_prep")}
    return _score_and_save(job, model, meta, val_manifest, out, device)


def _train_task(job: SegmentJob, train_manifest: str, val_manifest: str, classifier: str,
                out: str, threads: int, use_gpu: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    return _fit_and_save(job, train_manifest, val_manifest, classifier, out, device)


def _ray_train_worker(loop: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(loop["threads"])
    context = ray.train.get_context()
    _fit_and_save(loop["job"], loop["train_manifest"], loop["val_manifest"], loop["classifier"],
                  loop["out"], ray.train.torch.get_device(), rank=context.get_world_rank(),
                  workers=context.get_world_size(),
                  prepare_model=ray.train.torch.prepare_model,
                  prepare_loader=ray.train.torch.prepare_data_loader)


def _train_with_ray_train(job: SegmentJob, train_manifest: str, val_manifest: str,
                          classifier: str, out: str, *, workers: int, use_gpu: bool | None,
                          cpus: float | None) -> None:
    import tempfile

    import ray.train
    import ray.train.torch

    from cluster.train import MAX_FAILURES

    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    cpus = worker_cpus(workers, cpus)
    trainer = ray.train.torch.TorchTrainer(
        _ray_train_worker,
        train_loop_config={"job": job, "train_manifest": train_manifest,
                           "val_manifest": val_manifest, "classifier": classifier, "out": out,
                           "threads": torch_threads_for(cpus)},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus}),
        run_config=ray.train.RunConfig(
            name="camflow-segment", storage_path=tempfile.mkdtemp(prefix="camflow-ray-train-"),
            # A lost worker restarts the group; the model is saved by rank 0 once trained.
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES)))
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"segmentation training into {storage.redact(out)} failed"
                           ) from result.error


def train_segmenter(job: SegmentJob, train_manifest: str, val_manifest: str, classifier: str,
                    out: str, *, workers: int = 1, use_gpu: bool | None = None,
                    cpus: float | None = None) -> dict[str, Any]:
    """Train, score and save the segmentation model into ``out``; returns the checkpoint's JSON
    (val mIoU and per-label IoU among it). One Ray task, or with ``workers`` > 1 Ray Train's
    DDP over that many workers (rank 0 scores and saves)."""
    saved = read_segmenter_meta(out, storage_options=job.storage_options)
    if same_job(saved, job.key()):
        log.info("segmentation model %s: already trained for this job", storage.redact(out))
        if saved.get("inference") == json.loads(json.dumps(dataclasses.asdict(job.inference))):
            return saved
        log.info("segmentation model %s: scored again with %s", storage.redact(out),
                 job.inference)
        return one_task(_rescore_task, job, val_manifest, out, use_gpu=use_gpu, cpus=cpus)
    if workers > 1:
        _train_with_ray_train(job, train_manifest, val_manifest, classifier, out,
                              workers=workers, use_gpu=use_gpu, cpus=cpus)
        return read_segmenter_meta(out, storage_options=job.storage_options)
    return one_task(_train_task, job, train_manifest, val_manifest, classifier, out,
                    use_gpu=use_gpu, cpus=cpus)
