"""The refinement stage on Ray: AffinityNet trained on the training split's confident seeds (one
Ray task), then every seed walked on its image's affinities by an actor pool (Ray Data), shard by
shard, into a ``refined_masks`` table, exactly once.

The refined masks of generation run ``p1`` and method ``broadcam`` are the run ``p1-refine``,
method ``broadcam``, of the same output root: their own commit markers and lease, so nothing of
the generation's outputs is touched. A shard is a row range of the manifest, as in generation; a
killed worker's shard is retried by Ray Data onto the same paths, a rerun skips committed shards,
and the driver merges each shard's mask-metric state once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from camflow import storage
from camflow.data.manifest import ManifestRows, manifest_rows, read_manifest
from camflow.data.rejects import REJECTS_SCHEMA
from camflow.lease import LeaseKeeper
from camflow.models.checkpoint import load_checkpoint
from camflow.models.classifier import dense_prep_of
from camflow.refine import AffinityNet, RefineOptions, seed_power
from camflow.refine.checkpoint import load_affinity, read_affinity_meta, save_affinity
from camflow.refine.seeds import confident_labels, seed_maps
from camflow.refine.shard import REFINED_TABLE, refine_shard
from camflow.refine.train import AffinityTraining, ConfidentItems, fit_affinity
from camflow.run_metrics import RunTotals, states_to_bytes
from camflow.shards import ShardStore
from camflow.train.dense import pixel_items
from cluster.connect import actor_options, one_task, same_job, torch_threads_for, worker_cpus
from cluster.generate import plan_shards

log = logging.getLogger("camflow.cluster")

__all__ = ["REFINED_TABLE", "RefineJob", "RefineResult", "refine_run_id", "run_refinement",
           "train_affinity_net"]

STATES = "refine_states"  # each shard's mask-metric state, beside its table


def refine_run_id(run_id: str) -> str:
    return f"{run_id}-refine"


@dataclass(frozen=True)
class RefineJob:
    """What one refinement is: the seeds of ``run_id`` / ``method`` under ``output``, refined."""

    output: str
    run_id: str
    method: str
    num_classes: int
    options: RefineOptions = RefineOptions()
    training: AffinityTraining = AffinityTraining()
    shard_size: int = 64
    image_size: int = 112  # AffinityNet's input: the size the seeds' masks are made at
    # The background score of the method's pseudo masks (calibrated): puts the seeds on IRN's
    # scale (``seed_power``); None takes them as they are.
    seed_bg_threshold: float | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def key(self) -> dict[str, Any]:
        """What the affinity net depends on: a saved net with another key is trained again."""
        return {"run": self.run_id, "method": self.method,
                "options": dataclasses.asdict(self.options),
                "training": dataclasses.asdict(self.training), "image_size": self.image_size,
                "seed_bg_threshold": self.seed_bg_threshold}

    @property
    def power(self) -> float:
        return seed_power(self.seed_bg_threshold, self.options)


@dataclass
class RefineResult:
    run_id: str
    shards_total: int
    shards_skipped: int
    rejects: int
    metrics: dict[str, Any]


def _confident_items(job: RefineJob, records: list[dict[str, Any]], prep: Any) -> ConfidentItems:
    from camflow.generate import decode_records

    store = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
    seeds: dict[str, list[dict[str, Any]]] = {}
    for row in store.read("seeds", job.method).to_pylist():
        seeds.setdefault(row["image_id"], []).append(row)
    images, _ = decode_records(records, num_classes=job.num_classes,
                               storage_options=job.storage_options)

    def labels(image_id: str, pixels: np.ndarray) -> torch.Tensor | None:
        if image_id not in seeds:
            return None
        classes, maps = seed_maps(seeds[image_id], pixels.shape[:2])
        return torch.from_numpy(confident_labels(maps, classes, job.num_classes, job.options,
                                                 image_id, power=job.power, image=pixels))

    return pixel_items(((im.image_id, im.pixels) for im in images), prep, labels)


def _train_task(job: RefineJob, manifest: str, classifier: str, out: str,
                threads: int, use_gpu: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(job.training.seed)
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    model, _ = load_checkpoint(classifier, storage_options=job.storage_options)
    prep = dense_prep_of(model, job.image_size)
    records = read_manifest(manifest, storage_options=job.storage_options).to_pylist()
    items = _confident_items(job, records, prep)
    if not len(items):
        raise ValueError(f"run {job.run_id}: no seeds of {job.method} to train AffinityNet on")
    net = AffinityNet.from_classifier(model, stride=job.options.stride)
    net.image_prep = prep
    started = time.monotonic()
    history = fit_affinity(net, items, radius=job.options.radius, config=job.training,
                           device=device)
    meta = {"key": job.key(), "history": history, "images": len(items),
            "seconds": time.monotonic() - started}
    save_affinity(net, out, meta, storage_options=job.storage_options)
    return read_affinity_meta(out, storage_options=job.storage_options)


def train_affinity_net(job: RefineJob, manifest: str, classifier: str, out: str, *,
                       use_gpu: bool | None = None, cpus: float | None = None) -> dict[str, Any]:
    """Train AffinityNet on the confident labels of every seeded image of ``manifest`` (one Ray
    task) into ``out``; an existing net trained for the same job is kept."""
    saved = read_affinity_meta(out, storage_options=job.storage_options)
    if same_job(saved, job.key()):
        log.info("affinity net %s: already trained for this job", storage.redact(out))
        return saved
    return one_task(_train_task, job, manifest, classifier, out, use_gpu=use_gpu, cpus=cpus)


class RefineWorker:
    """Holds the affinity net; refines and commits one shard at a time."""

    def __init__(self, job: RefineJob, affinity: str, manifest: str, num_threads: int,
                 use_gpu: bool) -> None:
        torch.set_num_threads(num_threads)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        net, _ = load_affinity(affinity, storage_options=job.storage_options)
        self.net, self.job = net.to(self.device), job
        self.rows = ManifestRows(manifest, storage_options=job.storage_options)
        self.seeds = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
        self.store = ShardStore(job.output, refine_run_id(job.run_id),
                                storage_options=job.storage_options)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        records = self.rows.read(int(row["start"]), int(row["stop"])).to_pylist()
        ids = [str(r["image_id"]) for r in records]
        seeds = self.seeds.read("seeds", self.job.method, image_ids=ids).to_pylist()
        done = refine_shard(records, seeds, self.net, self.net.image_prep, self.job.num_classes,
                            self.job.options, power=self.job.power,
                            storage_options=self.job.storage_options,
                            device=self.device)
        rejects = pa.Table.from_pylist(done.rejects, schema=REJECTS_SCHEMA)
        states = states_to_bytes({self.job.method: {"mask": done.confusion}}, rejects.num_rows)
        self.store.commit(self.job.method, row["shard"],
                          {REFINED_TABLE: done.masks, "rejects": rejects}, files={STATES: states},
                          extra={"images": len(records)})
        return {"shard": row["shard"], "states": states}


def run_refinement(job: RefineJob, manifest: str, affinity: str, *, workers: int = 1,
                   use_gpu: bool | None = None, cpus_per_worker: float | None = None
                   ) -> RefineResult:
    """Refined masks of every image of ``manifest`` with seeds; skips committed shards."""
    import ray.data

    store = ShardStore(job.output, refine_run_id(job.run_id), storage_options=job.storage_options)
    with store.lease() as lease, LeaseKeeper(lease) as keeper:
        shards = plan_shards(manifest_rows(manifest, storage_options=job.storage_options),
                             job.shard_size)
        done = store.committed(job.method)
        todo = [s for s in shards if s.name not in done]
        totals = RunTotals()
        for shard, data in store.read_files(STATES, job.method, sorted(done)):
            totals.add(shard, data)
        if todo:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            cpus = worker_cpus(workers, cpus_per_worker)
            opts = actor_options(use_gpu=use_gpu, num_cpus=cpus)
            items = [{"shard": s.name, "start": s.start, "stop": s.stop} for s in todo]
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
                RefineWorker, compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_kwargs={"job": job, "affinity": affinity, "manifest": manifest,
                                       "num_threads": torch_threads_for(cpus),
                                       "use_gpu": opts["num_gpus"] > 0},
                num_cpus=opts["num_cpus"], num_gpus=opts["num_gpus"])
            for row in ds.iter_rows():
                keeper.raise_if_lost()
                totals.add(row["shard"], row["states"])
        keeper.raise_if_lost(read=True)
    mask = totals.per_method.get(job.method, {}).get("mask")
    metrics = {"refined_mask_mIoU": mask.compute()["mIoU"] if mask is not None else float("nan"),
               "refined_bg_threshold": job.options.mask_bg_threshold}
    return RefineResult(store.run_id, len(shards), len(shards) - len(todo), totals.rejects,
                        metrics)
