"""BroadCAM's feature pass on Ray: actors turn shards into BLS partial sums; the driver solves.

    shards -> FeatureWorker actors (CPU or GPU): pooled multi-stage features -> partial sums
           -> driver: merge (exact, any order) -> BLS.finalize()

A worker returns only the sums (O(d^2), whatever the shard size), never the features, packed as
safetensors bytes with JSON metadata (no pickled objects cross the wire). On request each worker
also writes its shard's features to Parquet (``camflow.features.feature_tables``) so the BLS can be
refitted with other hyper-parameters without another pass through the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from torch import nn

from camflow import storage
from camflow.bls import BLS
from camflow.bls.estimator import ALPHA, STEP
from camflow.data.dataset import ManifestDataset
from camflow.data.rejects import Rejects
from camflow.features import accumulate, default_layers, feature_tables
from camflow.models.classifier import image_prep_of
from camflow.tensorfile import metadata
from cluster.connect import actor_options, torch_threads_for, worker_cpus

__all__ = ["FeatureWorker", "ManifestShard", "ShardSums", "fit_bls_distributed"]

log = logging.getLogger("camflow.cluster")


@dataclass(frozen=True)
class ManifestShard:
    """Manifest rows for one worker: decoded, resized and normalised inside the worker."""

    rows: list[dict[str, Any]]
    num_classes: int
    size: int | tuple[int, int] = 224
    root: str | None = None
    batch_size: int = 32
    # Credentials may live here: never printed.
    storage_options: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class ShardSums:
    """What a worker sends back for one shard."""

    name: str
    state: dict[str, np.ndarray]
    feature_layout: list[tuple[str, int]] | None
    rejects: list[dict[str, str]]

    def pack(self) -> bytes:
        meta = {"name": self.name, "feature_layout": self.feature_layout, "rejects": self.rejects}
        return st_save(self.state, metadata={"shard": json.dumps(meta)})

    @classmethod
    def unpack(cls, data: bytes) -> ShardSums:
        meta = json.loads(metadata(data, "shard"))
        layout = meta["feature_layout"]
        return cls(
            name=meta["name"],
            state=st_load(data),
            feature_layout=None if layout is None else [(n, int(w)) for n, w in layout],
            rejects=meta["rejects"],
        )


def _manifest_batches(shard: ManifestShard, rejects: Rejects, model: nn.Module) -> Iterator[tuple]:
    """Decoded batches of a manifest shard, prepared as ``model`` was trained to see them; an
    image that fails to decode goes to ``rejects``."""
    dataset = ManifestDataset(
        pa.Table.from_pylist(shard.rows),
        shard.num_classes,
        transform=image_prep_of(model, shard.size),
        root=shard.root,
        storage_options=shard.storage_options,
    )
    images, labels, ids = [], [], []
    for index in range(len(dataset)):
        try:
            item = dataset[index]
        except (OSError, ValueError) as exc:  # BadImageError is a ValueError
            row = shard.rows[index]
            rejects.add(row.get("image_id", f"row{index}"), row.get("uri", ""), "decode", str(exc))
            continue
        images.append(item["image"])
        labels.append(item["labels"])
        ids.append(item["image_id"])
        if len(ids) == shard.batch_size:
            yield torch.stack(images), torch.stack(labels), ids
            images, labels, ids = [], [], []
    if ids:
        yield torch.stack(images), torch.stack(labels), ids


class FeatureWorker:
    """Holds one model; ``sums(shard)`` returns the shard's BLS partial sums as packed bytes.

    A shard is a :class:`ManifestShard` or any iterable of ``(images, labels[, image_ids])``
    batches. ``model_factory`` is a zero-argument callable returning the ``nn.Module`` (so this
    layer does not care how checkpoints are stored). Torch threads are set here because Ray
    starts actors with one.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        layers: Sequence[str] | None = None,
        *,
        device: str = "cpu",
        num_threads: int | None = None,
    ) -> None:
        torch.set_num_threads(num_threads or torch_threads_for(1))
        self.device = torch.device(device)
        self.model = model_factory().to(self.device).eval()
        self.layers = tuple(default_layers(self.model) if layers is None else layers)

    def sums(
        self,
        shard: ManifestShard | Iterable[Any],
        name: str = "shard",
        features_uri: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> bytes:
        rejects = Rejects()
        batches = _manifest_batches(shard, rejects, self.model) if isinstance(shard, ManifestShard) else shard
        written: list[tuple[list[str], dict[str, torch.Tensor], np.ndarray]] = []

        def keep(ids, by_layer, labels) -> None:
            written.append((ids, {k: v.cpu() for k, v in by_layer.items()}, labels))

        bls = accumulate(self.model, batches, self.layers, rejects=rejects,
                         sink=keep if features_uri else None)
        if features_uri and written:
            self._write_features(written, name, features_uri, storage_options)
        return ShardSums(
            name=name,
            state=bls.state(),
            feature_layout=bls.feature_layout,
            rejects=[{"image_id": r.image_id, "uri": r.uri, "stage": r.stage, "reason": r.reason}
                     for r in rejects],
        ).pack()

    def _write_features(self, written, name, features_uri, storage_options) -> None:
        ids = [i for batch_ids, _, _ in written for i in batch_ids]
        by_layer = {layer: torch.cat([b[layer] for _, b, _ in written]) for layer in self.layers}
        labels = np.concatenate([lab for _, _, lab in written])
        for layer, table in feature_tables(ids, by_layer, labels).items():
            uri = storage.join(features_uri, f"stage={layer}", f"{name}.parquet")
            storage.write_table(table, uri, storage_options=storage_options)


def fit_bls_distributed(
    model_factory: Callable[[], nn.Module],
    shards: Sequence[ManifestShard | Iterable[Any]],
    layers: Sequence[str] | None = None,
    *,
    num_workers: int = 2,
    alpha: float = ALPHA,
    step: int = STEP,
    enhance: bool = True,
    device: str | None = None,
    num_cpus_per_worker: float | None = None,
    num_threads: int | None = None,
    features_uri: str | None = None,
    storage_options: dict[str, Any] | None = None,
    rejects: Rejects | None = None,
) -> BLS:
    """Fit BroadCAM's BLS over ``shards`` with a pool of Ray feature actors; returns it solved.

    ``device`` defaults to "cuda" when the Ray cluster has GPUs (one GPU per worker), else "cpu".
    Bad images are reported to ``rejects`` (and logged) and skipped. With ``features_uri`` the
    pooled features are also written to ``<features_uri>/stage=<layer>/shard-XXXXX.parquet``.
    """
    if not shards:
        raise ValueError("shards: nothing to fit on (empty list)")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    use_gpu = device.startswith("cuda") if device else None
    workers_wanted = min(num_workers, len(shards))
    cpus = worker_cpus(workers_wanted, num_cpus_per_worker)
    options = actor_options(use_gpu=use_gpu, num_cpus=cpus)
    device = device or ("cuda" if options["num_gpus"] else "cpu")
    threads = num_threads or torch_threads_for(cpus)
    # A worker that dies is restarted and its shard re-run; sums merge only when a shard's task
    # returns, so a retried shard is never counted twice.
    remote = ray.remote(FeatureWorker).options(max_restarts=2, max_task_retries=2, **options)
    workers = [remote.remote(model_factory, layers, device=device, num_threads=threads)
               for _ in range(workers_wanted)]
    pool = ray.util.ActorPool(workers)
    names = [f"shard-{i:05d}" for i in range(len(shards))]
    bls = BLS(alpha=alpha, step=step, enhance=enhance)
    rejects = Rejects() if rejects is None else rejects
    try:
        results = pool.map_unordered(
            lambda actor, job: actor.sums.remote(job[0], job[1], features_uri, storage_options),
            list(zip(shards, names)),
        )
        for packed in results:
            part = ShardSums.unpack(packed)
            for r in part.rejects:
                rejects.add(r["image_id"], r["uri"], r["stage"], r["reason"])
            if part.state:
                bls.merge(BLS.from_state(part.state, feature_layout=part.feature_layout))
            log.info("BLS sums of %s merged (%d rows so far)", part.name, bls.n_samples_)
    finally:
        for worker in workers:
            ray.kill(worker)
    if bls.n_samples_ == 0:
        raise ValueError(f"no usable rows in {len(shards)} shard(s); {len(rejects)} rejected")
    return bls.finalize()
