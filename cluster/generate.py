"""Streaming CAM generation on Ray Data, exactly once, into Parquet on disk or object storage.

    manifest shards -> decode (tasks; bad images -> rejects) -> CAM workers (actor pool,
    map_batches; GPU when present) -> seeds / pseudo masks / boxes + metrics (tasks) -> commit

One Ray Data row is one shard, so a retried row redoes exactly one shard onto the same paths.
Ray Data restarts a killed CAM worker and retries its shard; the commit markers of
``camflow.shards`` make the retry, and any rerun, write nothing twice. Values travel between
stages as plain numpy columns and JSON, never pickled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from torch import nn
from tqdm import tqdm

from camflow import generate as gen
from camflow import storage
from camflow.data.rejects import REJECTS_SCHEMA
from camflow.lease import LEASE_TTL, LeaseKeeper, RunLease
from camflow.models.checkpoint import load_checkpoint
from camflow.precision import autocast_dtype
from camflow.shards import ShardStore
from cluster.connect import actor_options, torch_threads_for, worker_cpus

log = logging.getLogger("camflow.cluster")

DECODE = "decode"  # the partition holding a shard's rejects; committed last, it marks the shard done


@dataclass(frozen=True)
class GenerationJob:
    output: str
    run_id: str
    methods: tuple[gen.CamMethod, ...]
    options: gen.GenerateOptions
    shard_size: int = 64
    # Per method key: the constant background score of its pseudo masks (else options').
    bg_thresholds: dict[str, float] = field(default_factory=dict)
    # Credentials may live here: never printed.
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def options_for(self, method: gen.CamMethod) -> gen.GenerateOptions:
        threshold = self.bg_thresholds.get(method.key)
        if threshold is None:
            return self.options
        mask = dataclasses.replace(self.options.mask, bg_threshold=threshold)
        return dataclasses.replace(self.options, mask=mask)


@dataclass
class GenerationResult:
    run_id: str
    shards_total: int
    shards_skipped: int
    rejects: int
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointModel:
    """A model factory that workers can rebuild anywhere: the checkpoint's URI, not its weights."""

    uri: str
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def __call__(self) -> nn.Module:
        model, _ = load_checkpoint(self.uri, storage_options=self.storage_options)
        return model


def plan_shards(manifest: pa.Table, shard_size: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Deterministic shards: contiguous runs of ``shard_size`` manifest rows, in manifest order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    rows = manifest.to_pylist()
    return [(f"shard-{i // shard_size:05d}", rows[i:i + shard_size])
            for i in range(0, len(rows), shard_size)]


# -- what travels between stages: plain numpy columns of one shard -----------------------------
#
# A shard's arrays of one kind (pixels, true masks, each method's maps and seeds) travel as one
# flat array and a [n, ndim] array of their shapes: Ray carries both as Arrow tensor columns,
# with no pickling and no copy into another container format.

def _flat(arrays: Sequence[np.ndarray | None], ndim: int,
          dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of one rank as one flat array and their shapes (a row of -1 for a missing one)."""
    shapes = np.array([a.shape if a is not None else (-1,) * ndim for a in arrays],
                      np.int64).reshape(len(arrays), ndim)
    parts = [a.ravel() for a in arrays if a is not None]
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)).astype(dtype, copy=False), shapes


def _unflat(flat: np.ndarray, shapes: np.ndarray) -> list[np.ndarray | None]:
    out, at = [], 0
    for shape in np.asarray(shapes, np.int64).reshape(len(shapes), -1):
        if shape[0] < 0:
            out.append(None)
            continue
        n = int(np.prod(shape))
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out


def _image_columns(images: Sequence[gen.DecodedImage], *, pixels: bool) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    if pixels:
        cols["pixels"], cols["pixel_shapes"] = _flat([im.pixels for im in images], 3, np.uint8)
    cols["gt"], cols["gt_shapes"] = _flat([im.gt_mask for im in images], 2, np.uint8)
    cols["meta"] = json.dumps([{"image_id": im.image_id, "labels": im.labels,
                                "boxes": im.gt_boxes} for im in images])
    return cols


def _images_of(row: dict[str, Any]) -> list[gen.DecodedImage]:
    meta = json.loads(row["meta"])
    pixels = (_unflat(row["pixels"], row["pixel_shapes"]) if "pixels" in row
              else [None] * len(meta))
    gts = _unflat(row["gt"], row["gt_shapes"])
    return [gen.DecodedImage(m["image_id"], p, m["labels"], g, m["boxes"])
            for m, p, g in zip(meta, pixels, gts)]


def _map_columns(maps: dict[str, list[gen.ImageMaps]]) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for key, made in maps.items():
        # Every method has the same shapes: one image's classes at its size.
        cols[f"maps/{key}"], cols["map_shapes"] = _flat([m.maps for m in made], 3, np.float16)
        cols[f"seeds/{key}"], cols["seed_shapes"] = _flat([m.seeds for m in made], 3, np.uint8)
    return cols


def _maps_of(row: dict[str, Any], key: str) -> list[gen.ImageMaps]:
    return [gen.ImageMaps(m, s) for m, s in zip(_unflat(row[f"maps/{key}"], row["map_shapes"]),
                                               _unflat(row[f"seeds/{key}"], row["seed_shapes"]))]


# -- the three stages -------------------------------------------------------------------------

def _decode_stage(row: dict[str, Any], num_classes: int,
                  storage_options: dict[str, Any] | None) -> dict[str, Any]:
    images, rejects = gen.decode_records(json.loads(row["records"]), num_classes=num_classes,
                                         storage_options=storage_options)
    return {"shard": row["shard"], "rejects": json.dumps(rejects),
            **_image_columns(images, pixels=True)}


class CamWorker:
    """Holds the model and computes every method's maps for one shard at a time."""

    def __init__(self, model_factory: Callable[[], nn.Module], methods: Sequence[gen.CamMethod],
                 options: gen.GenerateOptions, num_threads: int, use_gpu: bool) -> None:
        torch.set_num_threads(num_threads)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        model = model_factory().eval().to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model, self.methods, self.options = model, list(methods), options

    def _autocast(self) -> torch.autocast:
        # bfloat16 where the device runs it natively (the weighting itself stays float32).
        dtype = autocast_dtype(self.device, training=False)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def best_bg_thresholds(self, images: Sequence[gen.DecodedImage]) -> dict[str, float]:
        """Per method, the background score of its best seeds on ``images`` (those with masks)."""
        with self._autocast():
            return gen.best_bg_thresholds(self.model, images, self.methods, self.options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i in range(len(batch["shard"])):
            row = {key: values[i] for key, values in batch.items()}
            images = _images_of(row)
            with self._autocast():
                maps = gen.class_maps(self.model, images, self.methods, self.options)
            # Post-processing needs the pixels only for the CRF: the rest of the time only the
            # true masks and labels travel on with the maps.
            keep = ("shard", "rejects", "meta", "gt", "gt_shapes")
            keep += ("pixels", "pixel_shapes") if self.options.mask.crf else ()
            for key, value in {**{k: row[k] for k in keep}, **_map_columns(maps)}.items():
                out.setdefault(key, []).append(value)
        return out


def _finish_stage(row: dict[str, Any], job: GenerationJob, store: ShardStore | None = None,
                  lease: RunLease | None = None) -> dict[str, Any]:
    store = store or ShardStore(job.output, job.run_id, storage_options=job.storage_options)
    if lease is not None:
        # The driver holds the run's lease; once another writer has taken it, this shard is
        # theirs to write. (A shard past this check still lands: the lease is no fence.)
        lease.check()
    images = _images_of(row)
    summary = {}
    for method in job.methods:
        maps = _maps_of(row, method.key)
        tables, metrics = gen.shard_outputs(images, maps, job.options_for(method))
        store.commit(method.key, row["shard"], tables,
                     extra={"metrics": gen.metrics_to_json(metrics), "images": len(images)})
        summary[method.key] = tables["seeds"].num_rows
    rejects = pa.Table.from_pylist(json.loads(row["rejects"]), schema=REJECTS_SCHEMA)
    store.commit(DECODE, row["shard"], {"rejects": rejects})
    return {"shard": row["shard"], "rejects": rejects.num_rows, "seeds": json.dumps(summary)}


class Decoder:
    """The decode stage as a long-lived actor: no process start and imports per shard."""

    def __init__(self, num_classes: int, storage_options: dict[str, Any] | None) -> None:
        self.num_classes, self.storage_options = num_classes, storage_options

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return _decode_stage(row, self.num_classes, self.storage_options)


class Finisher:
    """Post-processing and commits as a long-lived actor that keeps its storage connections."""

    def __init__(self, job: GenerationJob, lease_owner: str | None = None) -> None:
        self.job = job
        self.store = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
        self.lease = None if lease_owner is None else self.store.lease(owner=lease_owner)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return _finish_stage(row, self.job, self.store, self.lease)


def _calibrate_task(records: str, model_factory: Callable[[], nn.Module],
                    methods: Sequence[gen.CamMethod], options: gen.GenerateOptions,
                    num_threads: int, use_gpu: bool, storage_options: dict[str, Any] | None) -> str:
    worker = CamWorker(model_factory, methods, options, num_threads, use_gpu)
    images, _ = gen.decode_records(json.loads(records), num_classes=options.num_classes,
                                   storage_options=storage_options)
    return json.dumps(worker.best_bg_thresholds(images))


def calibrate_bg_thresholds(
    job: GenerationJob,
    records: Sequence[dict[str, Any]],
    model_factory: Callable[[], nn.Module],
    *,
    use_gpu: bool | None = None,
    cpus: float | None = None,
) -> dict[str, float]:
    """Per method, the background score at which its seeds score best on ``records`` (images
    with masks, typically a few training images), computed by one Ray task.

    Methods without a usable mask among ``records`` are left out (they keep the job's default).
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call cluster.connect.connect() first")
    cpus = worker_cpus(1, cpus)
    opts = actor_options(use_gpu=use_gpu, num_cpus=cpus)
    task = ray.remote(_calibrate_task).options(num_cpus=opts["num_cpus"], num_gpus=opts["num_gpus"],
                                               max_retries=2)
    storage_options = job.storage_options
    if storage_options is None and records:
        storage_options = storage.options_for(str(records[0]["uri"]))
    found = ray.get(task.remote(json.dumps(list(records), default=_json_default), model_factory,
                                tuple(job.methods), job.options, torch_threads_for(cpus),
                                opts["num_gpus"] > 0, storage_options))
    return json.loads(found)


# -- driver ---------------------------------------------------------------------------------------

def run_generation(
    job: GenerationJob,
    manifest: pa.Table,
    model_factory: Callable[[], nn.Module],
    *,
    workers: int = 1,
    use_gpu: bool | None = None,
    gpu_fraction: float = 1.0,
    cpus_per_worker: float | None = None,
    lease_ttl: float = LEASE_TTL,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> GenerationResult:
    """Generate every shard not yet committed under ``job.output``/``job.run_id``; merge metrics.

    Each of the ``workers`` CAM actors reserves ``cpus_per_worker`` CPUs (default: a fair share of
    a one-node Ray, see cluster.connect.worker_cpus) and runs that many torch threads.
    ``progress`` shows a bar of committed shards on stderr (for terminals).
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call cluster.connect.connect() first")
    if job.storage_options is None:
        job = dataclasses.replace(job, storage_options=storage.options_for(job.output))
    store = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
    shards = plan_shards(manifest, job.shard_size)
    with store.lease(ttl=lease_ttl) as lease, LeaseKeeper(lease) as keeper:
        done = store.committed(DECODE)
        todo = [(s, recs) for s, recs in shards if s not in done]
        log.info("run %s: %d shards, %d already committed", job.run_id, len(shards),
                 len(shards) - len(todo))
        if todo:
            bar = tqdm(total=len(shards), initial=len(shards) - len(todo), unit="shard",
                       desc=f"seeds {job.run_id}", disable=not progress)

            def committed(row: dict[str, Any]) -> None:
                keeper.raise_if_lost()  # leaving the loop stops the stream
                bar.update(1)
                if on_shard is not None:
                    on_shard(row)

            try:
                _stream(job, todo, model_factory, workers=workers, use_gpu=use_gpu,
                        gpu_fraction=gpu_fraction, cpus_per_worker=cpus_per_worker,
                        on_shard=committed, lease_owner=lease.owner)
            except Exception:
                # A writer refusing a shard for the lost lease fails the stream with Ray's
                # wrapping of it; say what happened (the original stays chained).
                keeper.raise_if_lost(read=True)
                raise
            finally:
                bar.close()
        # Renewals come every ttl/3: a loss during the last shards shows only here.
        keeper.raise_if_lost(read=True)
    return collect(store, job, shards_total=len(shards), shards_skipped=len(shards) - len(todo))


def _stream(job: GenerationJob, todo, model_factory, *, workers: int, use_gpu: bool | None,
            gpu_fraction: float, cpus_per_worker: float | None, on_shard,
            lease_owner: str | None = None) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    cpus = worker_cpus(workers, cpus_per_worker)
    opts = actor_options(use_gpu=use_gpu, gpu_fraction=gpu_fraction, num_cpus=cpus)
    # Decoding and writing reserve no CPU: the CAM actors may take every core without starving
    # them (a reserved fraction deadlocks a machine whose CPUs the actors hold), and they overlap
    # with compute. They are small actor pools rather than tasks: a task's worker process that
    # goes idle is reaped, and restarting one (imports, storage connections) costs seconds.
    def io_pool(size: int) -> dict[str, Any]:
        return {"num_cpus": 0, "compute": ray.data.ActorPoolStrategy(size=size)}

    items = [{"shard": s, "records": json.dumps(recs, default=_json_default)} for s, recs in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(Decoder, fn_constructor_kwargs={"num_classes": job.options.num_classes,
                                                "storage_options": job.storage_options},
                **io_pool(1))
    ds = ds.map_batches(
        CamWorker, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={
            "model_factory": model_factory, "methods": job.methods, "options": job.options,
            "num_threads": torch_threads_for(cpus), "use_gpu": opts["num_gpus"] > 0,
        },
        # Ray Data restarts a dead actor and retries its shard by default (max_restarts=-1,
        # max_task_retries=-1); tests/cluster pin that a killed worker loses nothing.
        num_cpus=opts["num_cpus"], num_gpus=opts["num_gpus"],
    )
    ds = ds.map(Finisher, fn_constructor_kwargs={"job": job, "lease_owner": lease_owner},
                **io_pool(workers))
    for row in ds.iter_rows():
        log.info("committed %s", row["shard"])
        if on_shard is not None:
            on_shard(row)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} in a shard record")


def collect(store: ShardStore, job: GenerationJob, *, shards_total: int,
            shards_skipped: int) -> GenerationResult:
    """Merge the metric states recorded in every committed shard marker of the run."""
    by_method: dict[str, list[Any]] = {}
    for commit in store.commits():  # one listing and one batched read for every method
        by_method.setdefault(commit.method, []).append(commit)
    rejects = sum(c.files["rejects"]["rows"] for c in by_method.get(DECODE, []))
    result = GenerationResult(job.run_id, shards_total, shards_skipped, rejects=rejects)
    for method in job.methods:
        parts = [gen.metrics_from_json(c.extra["metrics"]) for c in by_method.get(method.key, [])]
        summary = gen.summarize(gen.merge_metrics(parts))
        options = job.options_for(method)
        if summary and options.mask.background == "constant":  # (1 - max)^alpha has none
            summary["mask_bg_threshold"] = options.mask.threshold
        result.metrics[method.key] = summary
    return result
