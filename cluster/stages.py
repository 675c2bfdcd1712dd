"""The stages of streaming generation, and the plain numpy columns a shard travels in.

    decode (``Decoder``) -> maps (``CamWorker``) -> outputs, metrics, commit (``Finisher``)

Each stage is a long-lived Ray actor called on one shard (one Ray Data row) at a time; the
driver that wires them together is ``cluster.generate``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from camflow import generate as gen
from camflow.data.manifest import ManifestRows
from camflow.data.rejects import REJECTS_SCHEMA
from camflow.lease import RunLease
from camflow.precision import autocast_dtype
from camflow.run_metrics import states_to_bytes
from camflow.shards import ShardStore

DECODE = "decode"  # the partition holding a shard's rejects; committed last, it marks the shard done
METRIC_STATES = "metrics"  # the binary file of a shard's metric states, beside its rejects


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

def _decode_stage(row: dict[str, Any], records: list[dict[str, Any]], num_classes: int,
                  storage_options: dict[str, Any] | None) -> dict[str, Any]:
    images, rejects = gen.decode_records(records, num_classes=num_classes,
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
    seeds, metrics = {}, {}
    for method in job.methods:
        maps = _maps_of(row, method.key)
        tables, metrics[method.key] = gen.shard_outputs(images, maps, job.options_for(method))
        store.commit(method.key, row["shard"], tables, extra={"images": len(images)})
        seeds[method.key] = tables["seeds"].num_rows
    rejects = pa.Table.from_pylist(json.loads(row["rejects"]), schema=REJECTS_SCHEMA)
    # Every method's metric states in one file, committed with the shard's last marker; the
    # driver merges the same bytes as the shard streams back.
    states = states_to_bytes(metrics, rejects.num_rows)
    store.commit(DECODE, row["shard"], {"rejects": rejects}, files={METRIC_STATES: states})
    return {"shard": row["shard"], "rejects": rejects.num_rows, "seeds": json.dumps(seeds),
            "metrics": states}


class Decoder:
    """The decode stage as a long-lived actor: no process start and imports per shard. It reads
    its shards' records from the manifest file itself, so the driver never holds them."""

    def __init__(self, manifest: str, num_classes: int,
                 manifest_options: dict[str, Any] | None,
                 storage_options: dict[str, Any] | None) -> None:
        self.rows = ManifestRows(manifest, storage_options=manifest_options)
        self.num_classes, self.storage_options = num_classes, storage_options

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        records = self.rows.read(int(row["start"]), int(row["stop"])).to_pylist()
        return _decode_stage(row, records, self.num_classes, self.storage_options)


class Finisher:
    """Post-processing and commits as a long-lived actor that keeps its storage connections."""

    def __init__(self, job: GenerationJob, lease_owner: str | None = None) -> None:
        self.job = job
        self.store = ShardStore(job.output, job.run_id, storage_options=job.storage_options)
        self.lease = None if lease_owner is None else self.store.lease(owner=lease_owner)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return _finish_stage(row, self.job, self.store, self.lease)
