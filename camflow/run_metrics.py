"""A run's metrics: per-shard accumulator states in one safetensors file, merged as they arrive.

Each shard's states (every method's seed sweep, mask confusion, box accuracy and pixel AP, and
the shard's reject count) are one small binary file written beside the shard's data. Workers
hand the same bytes back to the driver, which adds them into a ``RunTotals`` as shards complete.
Every state is a fixed-size array of counts, so a run of any length merges in constant memory.

The driver also saves its totals now and then (``RunTotals.to_bytes``: the merged states and
the names of the shards in them). A resumed run starts from the last saved totals and reads back
only the states of shards committed after it, in batches: one read instead of one per shard
when a finished run is opened again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from camflow.metrics import BoxAccuracy, PixelAP, SeedSweep, SegConfusion
from camflow.metrics.accumulator import Accumulator
from camflow.tensorfile import metadata

__all__ = ["METRICS", "RunTotals", "new_metrics", "states_from_bytes", "states_to_bytes",
           "summarize"]

METRICS: dict[str, type[Accumulator]] = {
    "seed": SeedSweep, "mask": SegConfusion, "box": BoxAccuracy, "pixel": PixelAP}
_REJECTS = "shard/rejects"
_SHARDS = "camflow.shards"  # header metadata of a saved RunTotals: the shards merged into it


def new_metrics(num_classes: int) -> dict[str, Accumulator]:
    return {"seed": SeedSweep(num_classes), "mask": SegConfusion(num_classes + 1),
            "box": BoxAccuracy(), "pixel": PixelAP()}


def states_to_bytes(per_method: Mapping[str, Mapping[str, Accumulator]], rejects: int) -> bytes:
    """One shard's accumulators of every method, and its reject count, as safetensors bytes."""
    return st_save(_state_arrays(per_method, rejects))


def _state_arrays(per_method: Mapping[str, Mapping[str, Accumulator]],
                  rejects: int) -> dict[str, np.ndarray]:
    arrays = {_REJECTS: np.array(rejects, np.int64)}
    for method, metrics in per_method.items():
        for name, acc in metrics.items():
            for key, value in acc.state_dict().items():
                # 0-d config values must stay 0-d (np.ascontiguousarray would make them (1,)).
                arrays[f"{method}/{name}/{key}"] = np.require(value, requirements="C")
    return arrays


def states_from_bytes(data: bytes) -> tuple[dict[str, dict[str, Accumulator]], int]:
    """Inverse of ``states_to_bytes``: accumulators per method and metric, and the rejects."""
    arrays = st_load(data)
    grouped: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for key, value in arrays.items():
        if key == _REJECTS:
            continue
        method, name, field = key.split("/", 2)
        grouped.setdefault(method, {}).setdefault(name, {})[field] = value
    per_method = {method: {name: METRICS[name].from_state(state) for name, state in by.items()}
                  for method, by in grouped.items()}
    return per_method, int(arrays[_REJECTS])


class RunTotals:
    """Merged metric states of a run's shards; each shard counts once however often it is added
    (a retried shard reports the same states again)."""

    def __init__(self) -> None:
        self.per_method: dict[str, dict[str, Accumulator]] = {}
        self.rejects = 0
        self.shards: set[str] = set()

    def add(self, shard: str, data: bytes) -> bool:
        """Merge one shard's states (``states_to_bytes``); False if that shard was already in."""
        if shard in self.shards:
            return False
        per_method, rejects = states_from_bytes(data)
        for method, metrics in per_method.items():
            total = self.per_method.setdefault(method, {})
            for name, acc in metrics.items():
                if name in total:
                    total[name].merge(acc)
                else:
                    total[name] = acc
        self.rejects += rejects
        self.shards.add(shard)
        return True

    def summary(self, method: str) -> dict[str, Any]:
        return summarize(self.per_method.get(method))

    def to_bytes(self) -> bytes:
        """The merged states and the shards in them, as one safetensors payload."""
        return st_save(_state_arrays(self.per_method, self.rejects),
                       metadata={_SHARDS: json.dumps(sorted(self.shards))})

    @classmethod
    def from_bytes(cls, data: bytes) -> RunTotals:
        """Inverse of :meth:`to_bytes`; raises ValueError on anything else."""
        names = metadata(data, _SHARDS)
        if names is None:
            raise ValueError("not a camflow run-totals file (no shard list)")
        totals = cls()
        totals.per_method, totals.rejects = states_from_bytes(data)
        totals.shards = set(json.loads(names))
        return totals


def summarize(metrics: Mapping[str, Accumulator] | None) -> dict[str, Any]:
    """The headline figures of merged accumulators (NaN where nothing was counted)."""
    if not metrics:
        return {}
    seed = metrics["seed"].compute()
    mask = metrics["mask"].compute()
    box = metrics["box"].compute()
    pixel = metrics["pixel"].compute()
    return json.loads(json.dumps({
        "seed_mIoU": seed["best_mIoU"], "seed_best_threshold": seed["best_threshold"],
        "mask_mIoU": mask["mIoU"], "MaxBoxAccV2": box["MaxBoxAccV2"], "PxAP": pixel["PxAP"],
    }, default=float))
