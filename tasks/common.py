"""What every camflow Prefect task shares: JSON results (never pickled) and input-keyed caching."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE

from cluster.connect import (
    ClusterInfo,
    ClusterOptions,
    connect,
    local_output_warning,
    runs_with_room,
)

# A rerun with the same inputs and the same task code reuses the finished stage's result.
CACHED: dict[str, Any] = {
    "cache_policy": INPUTS + TASK_SOURCE,
    "cache_expiration": timedelta(days=30),
    "persist_result": True,
    "result_serializer": "json",
}
# Transient storage or cluster hiccups are retried; user mistakes fail fast on the first try.
RETRIED: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [5, 30]}


def ray_for(cluster: ClusterOptions, output: str | None = None) -> ClusterInfo:
    """Join the configured Ray cluster, or start the local one, once per process; warn when
    the workers are to write to ``output`` and it is a local path on a multi-machine cluster."""
    info = connect(cluster.address, dashboard=cluster.dashboard)
    if output is not None and (warning := local_output_warning(output)):
        logging.getLogger("camflow.cluster").warning(warning)
    return info


def concurrent_runs(cluster: ClusterOptions, runs: int, requested: int | None) -> int:
    """How many training runs of a sweep go at once: ``requested``, or as many as the cluster
    has room for; one after another where training is not distributed (it runs here)."""
    if requested is not None:
        return max(1, min(runs, requested))
    if not cluster.distributed or runs < 2:
        return 1
    ray_for(cluster)
    return runs_with_room(cluster, runs)
