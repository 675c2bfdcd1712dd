"""Streaming CAM generation on Ray Data, exactly once, into Parquet on disk or object storage.

    manifest row ranges -> decode (actor pool; bad images -> rejects) -> CAM workers (actor
    pool, map_batches; GPU when present) -> seeds / pseudo masks / boxes + metric states
    (actor pool) -> commit -> the driver merges the states as shards stream back

One Ray Data row is one shard, so a retried row redoes exactly one shard onto the same paths.
Ray Data restarts a killed CAM worker and retries its shard; the commit markers of
``camflow.shards`` make the retry, and any rerun, write nothing twice. The driver's cost grows
with the number of shards, not of images: a shard is a row range of the manifest file, whose
records only the decoders read. Values travel between stages as plain numpy columns and JSON
(``cluster.stages``), never pickled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from torch import nn
from tqdm import tqdm

from camflow import generate as gen
from camflow import storage
from camflow.data.manifest import manifest_rows, write_manifest
from camflow.lease import LEASE_TTL, LeaseKeeper
from camflow.models.checkpoint import load_checkpoint
from camflow.run_metrics import RunTotals
from camflow.shards import ShardStore
from cluster.connect import actor_options, torch_threads_for, worker_cpus
from cluster.stages import DECODE, METRIC_STATES, CamWorker, Decoder, Finisher, GenerationJob

log = logging.getLogger("camflow.cluster")

__all__ = ["DECODE", "CheckpointModel", "GenerationJob", "GenerationResult", "ShardPlan",
           "calibrate_bg_thresholds", "plan_shards", "run_generation"]


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


@dataclass(frozen=True)
class ShardPlan:
    """One shard: the manifest rows ``start`` to ``stop`` (exclusive)."""

    name: str
    start: int
    stop: int


def plan_shards(num_rows: int, shard_size: int) -> list[ShardPlan]:
    """Deterministic shards: contiguous runs of ``shard_size`` manifest rows, in manifest order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [ShardPlan(f"shard-{i // shard_size:05d}", i, min(i + shard_size, num_rows))
            for i in range(0, num_rows, shard_size)]


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
    manifest: str | pa.Table,
    model_factory: Callable[[], nn.Module],
    *,
    workers: int = 1,
    use_gpu: bool | None = None,
    gpu_fraction: float = 1.0,
    cpus_per_worker: float | None = None,
    decoders: int | None = None,
    finishers: int | None = None,
    lease_ttl: float = LEASE_TTL,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> GenerationResult:
    """Generate every shard not yet committed under ``job.output``/``job.run_id``; merge metrics.

    ``manifest`` is a manifest file's URI (the driver reads only its footer), or a table, which
    is written beside the run's lease first. Each of the ``workers`` CAM actors reserves
    ``cpus_per_worker`` CPUs (default: a fair share of a one-node Ray, see
    cluster.connect.worker_cpus) and runs that many torch threads. The decode and finish pools
    grow up to ``decoders`` and ``finishers`` actors (default: the cluster's CPUs), so the CPUs,
    not the CAM workers, set how many images are decoded and post-processed at once.
    ``progress`` shows a bar of committed shards on stderr (for terminals).
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call cluster.connect.connect() first")
    if job.storage_options is None:
        job = dataclasses.replace(job, storage_options=storage.options_for(job.output))
    store = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
    with store.lease(ttl=lease_ttl) as lease, LeaseKeeper(lease) as keeper:
        if isinstance(manifest, pa.Table):
            uri = store.run_path("manifest.parquet")
            write_manifest(manifest, uri, storage_options=job.storage_options)
            manifest = uri
        manifest_options = _options_for(manifest, job)
        shards = plan_shards(manifest_rows(manifest, storage_options=manifest_options),
                             job.shard_size)
        done = store.committed(DECODE)
        todo = [s for s in shards if s.name not in done]
        log.info("run %s: %d shards, %d already committed", job.run_id, len(shards),
                 len(shards) - len(todo))
        totals = _resumed_totals(store, [s.name for s in shards if s.name in done])
        saver = _TotalsSaver(store, totals)
        if todo:
            bar = tqdm(total=len(shards), initial=len(shards) - len(todo), unit="shard",
                       desc=f"seeds {job.run_id}", disable=not progress)

            def committed(row: dict[str, Any]) -> None:
                keeper.raise_if_lost()  # leaving the loop stops the stream
                totals.add(row["shard"], row["metrics"])
                saver.maybe_save()
                bar.update(1)
                if on_shard is not None:
                    on_shard(row)

            pools = _Pools(workers=workers, use_gpu=use_gpu, gpu_fraction=gpu_fraction,
                           cpus_per_worker=cpus_per_worker, decoders=decoders,
                           finishers=finishers)
            try:
                _stream(job, manifest, manifest_options, todo, model_factory, pools,
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
        saver.save()
    result = GenerationResult(job.run_id, len(shards), len(shards) - len(todo),
                              rejects=totals.rejects)
    for method in job.methods:
        summary = totals.summary(method.key)
        options = job.options_for(method)
        if summary and options.mask.background == "constant":  # (1 - max)^alpha has none
            summary["mask_bg_threshold"] = options.mask.threshold
        result.metrics[method.key] = summary
    return result


TOTALS = "metrics.safetensors"  # the run's merged metric states, saved by the driver


def _resumed_totals(store: ShardStore, done: list[str]) -> RunTotals:
    """The merged states of the committed shards ``done``: the run's saved totals, plus the
    states of shards committed after they were saved, read in batches (no marker reads)."""
    totals = RunTotals()
    saved = store.get_run_file(TOTALS) if done else None
    if saved is not None:
        try:
            totals = RunTotals.from_bytes(saved)
        except ValueError as exc:  # a cache: when unreadable, every shard's states are read
            log.warning("run %s: saved metric totals unreadable (%s); re-reading the shards",
                        store.run_id, exc)
        if not totals.shards <= set(done):  # made for another plan (another manifest)
            totals = RunTotals()
    for shard, data in store.read_files(METRIC_STATES, DECODE,
                                        [s for s in done if s not in totals.shards]):
        totals.add(shard, data)
    return totals


class _TotalsSaver:
    """Saves the driver's totals every ``every`` seconds, so a resume reads few shard states."""

    def __init__(self, store: ShardStore, totals: RunTotals, every: float = 30.0) -> None:
        self.store, self.totals, self.every = store, totals, every
        self.saved_at, self.saved = time.monotonic(), len(totals.shards)

    def maybe_save(self) -> None:
        if time.monotonic() - self.saved_at >= self.every:
            self.save()

    def save(self) -> None:
        if len(self.totals.shards) == self.saved:
            return
        try:
            self.store.put_run_file(TOTALS, self.totals.to_bytes())
        except OSError as exc:  # only a cache of what the committed shards hold
            log.warning("run %s: could not save metric totals: %s", self.store.run_id, exc)
            return
        self.saved_at, self.saved = time.monotonic(), len(self.totals.shards)


def _options_for(uri: str, job: GenerationJob) -> dict[str, Any] | None:
    """The output's storage options for a file in the output's bucket, else the environment's."""
    def bucket(u: str) -> str:
        return u.split("/", 3)[2] if "://" in u else ""

    if bucket(uri) == bucket(job.output) and uri.split("://")[0] == job.output.split("://")[0]:
        return job.storage_options
    return storage.options_for(uri)


@dataclass(frozen=True)
class _Pools:
    workers: int
    use_gpu: bool | None
    gpu_fraction: float
    cpus_per_worker: float | None
    decoders: int | None
    finishers: int | None


def _stream(job: GenerationJob, manifest: str, manifest_options: dict[str, Any] | None,
            todo: Sequence[ShardPlan], model_factory: Callable[[], nn.Module], pools: _Pools, *,
            on_shard: Callable[[dict[str, Any]], None], lease_owner: str | None = None) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    cpus = worker_cpus(pools.workers, pools.cpus_per_worker)
    opts = actor_options(use_gpu=pools.use_gpu, gpu_fraction=pools.gpu_fraction, num_cpus=cpus)
    free_cpus = io_pool_size(ray.cluster_resources().get("CPU", 1), pools.workers, cpus)

    # Decoding and finishing reserve no CPU: the CAM actors may take every core without starving
    # them (a reserved fraction deadlocks a machine whose CPUs the actors hold), and they overlap
    # with compute. They are autoscaled actor pools rather than tasks: a task's worker process
    # that goes idle is reaped, and restarting one (imports, storage connections) costs seconds.
    def io_pool(most: int | None) -> dict[str, Any]:
        size = max(1, most or free_cpus)
        return {"num_cpus": 0, "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=size)}

    items = [{"shard": s.name, "start": s.start, "stop": s.stop} for s in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(Decoder, fn_constructor_kwargs={
        "manifest": manifest, "num_classes": job.options.num_classes,
        "manifest_options": manifest_options, "storage_options": job.storage_options,
    }, **io_pool(pools.decoders))
    ds = ds.map_batches(
        CamWorker, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pools.workers),
        fn_constructor_kwargs={
            "model_factory": model_factory, "methods": job.methods, "options": job.options,
            "num_threads": torch_threads_for(cpus), "use_gpu": opts["num_gpus"] > 0,
        },
        # Ray Data restarts a dead actor and retries its shard by default (max_restarts=-1,
        # max_task_retries=-1); tests/cluster pin that a killed worker loses nothing.
        num_cpus=opts["num_cpus"], num_gpus=opts["num_gpus"],
    )
    ds = ds.map(Finisher, fn_constructor_kwargs={"job": job, "lease_owner": lease_owner},
                **io_pool(pools.finishers))
    for row in ds.iter_rows():
        log.info("committed %s", row["shard"])
        on_shard(row)


def io_pool_size(cluster_cpus: float, workers: int, cpus_per_worker: float) -> int:
    """The default most decoders (and finishers): the CPUs the CAM workers leave free, at least
    one. More would only contend with the CAM workers for their cores: on 2 cores, pools of up
    to 2 made a 20,000-image run 40 % slower per image than pools of 1 (bench/scale.py)."""
    return max(1, int(cluster_cpus - workers * cpus_per_worker))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} in a shard record")
