"""Starting or joining Ray: the one place that calls ``ray.init``.

``RAY_ADDRESS`` (or an explicit ``address``) joins an existing cluster; otherwise a local Ray sized
to this machine starts, without the dashboard unless asked for.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray

log = logging.getLogger("camflow.cluster")


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide the heavy stages run (the config's ``cluster`` section).

    ``address``: a Ray address (default ``RAY_ADDRESS``, else a local Ray). ``use_gpu`` None: use
    GPUs when the cluster has them. ``cpus_per_worker`` None: a one-node Ray's CPUs shared among
    the ``workers``, 1 on a multi-node cluster (see :func:`worker_cpus`). ``decoders`` and
    ``finishers``: the most actors that decode images and post-process and commit shards at
    once (autoscaled from one; None: the CPUs the CAM workers leave free, at least one).
    ``dashboard``: Ray's dashboard with a local Ray (port 8265).
    """

    address: str | None = None
    workers: int = 1
    use_gpu: bool | None = None
    gpu_fraction: float = 1.0
    cpus_per_worker: float | None = None
    decoders: int | None = None
    finishers: int | None = None
    dashboard: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers!r}")
        if not 0 < self.gpu_fraction <= 1:
            raise ValueError(f"gpu_fraction must lie in (0, 1], got {self.gpu_fraction!r}")
        for name in ("decoders", "finishers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker must be positive, got {self.cpus_per_worker!r}")

    @property
    def distributed(self) -> bool:
        """Whether training goes to Ray Train: a cluster (``address`` or ``RAY_ADDRESS``), several
        workers or GPUs."""
        joined = self.address or os.environ.get("RAY_ADDRESS")
        return bool(joined) or self.workers > 1 or bool(self.use_gpu)


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    num_cpus: float
    num_gpus: float
    local: bool


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
) -> ClusterInfo:
    """Initialise Ray once per process and describe what it offers."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        # Workers must not inherit Ray's default of one torch thread silently: every actor sets
        # its own thread count, see actor_options.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                num_gpus=num_gpus,
                include_dashboard=dashboard,
                log_to_driver=True,
            )
    resources = ray.cluster_resources()
    info = ClusterInfo(
        address=address or "local",
        num_cpus=float(resources.get("CPU", 0.0)),
        num_gpus=float(resources.get("GPU", 0.0)),
        local=not address,
    )
    log.info("Ray %s: %.0f CPUs, %.2g GPUs", info.address, info.num_cpus, info.num_gpus)
    return info


def cluster_hosts() -> int:
    """How many machines the connected Ray's live nodes are on (nodes of one host count once)."""
    return len({n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")})


def local_output_warning(uri: str) -> str | None:
    """What goes wrong with a local ``uri`` on a cluster of several machines, else None.

    Workers write where they run: under a local path, each machine's outputs land on its own
    disk, and the driver finds only its own. Fine on a file system that every machine mounts
    at that path, which this cannot tell.
    """
    if "://" in uri and not uri.startswith("file://"):
        return None
    hosts = cluster_hosts() if ray.is_initialized() else 1
    if hosts < 2:
        return None
    return (f"output {uri!r} is a local path, but the Ray cluster spans {hosts} machines: "
            "each one writes its shards to its own disk unless the path is on a file system "
            "that all of them mount. Use object storage (s3://...) for cluster runs.")


def actor_options(
    *, use_gpu: bool | None = None, gpu_fraction: float = 1.0, num_cpus: float = 1.0
) -> dict[str, Any]:
    """Resource options for a worker actor; ``use_gpu=None`` means "if the cluster has GPUs"."""
    if not 0 < gpu_fraction <= 1:
        raise ValueError(f"gpu_fraction must be in (0, 1], got {gpu_fraction}")
    if use_gpu is None:
        use_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    return {"num_cpus": num_cpus, "num_gpus": gpu_fraction if use_gpu else 0}


def torch_threads_for(num_cpus: float) -> int:
    """Threads a worker's torch should use: its CPU share (Ray would otherwise force one)."""
    return max(1, int(num_cpus))


def worker_cpus(workers: int, requested: float | None = None) -> float:
    """CPUs each of ``workers`` compute actors reserves: ``requested``, or a fair share.

    The default shares a one-node Ray's CPUs evenly among the workers (two actors on two cores
    get one each; one actor gets both), and is 1 on a multi-node cluster, whose config sizes it.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if requested is not None:
        if not requested > 0:
            raise ValueError(f"cpus_per_worker must be positive, got {requested}")
        return float(requested)
    if not ray.is_initialized():
        return 1.0
    if sum(1 for node in ray.nodes() if node.get("Alive")) != 1:
        return 1.0
    return max(1.0, ray.cluster_resources().get("CPU", 1.0) // workers)


def runs_with_room(options: ClusterOptions, runs: int) -> int:
    """How many of ``runs`` training runs fit on the connected Ray cluster at once, each with
    the resources ``options`` give one run: its GPUs where it uses them, else its CPUs. One
    where there is room for no more (a one-node machine shares its CPUs among a run's workers).
    """
    if runs < 1 or not ray.is_initialized():
        return 1
    total = ray.cluster_resources()
    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    gpus = total.get("GPU", 0.0)
    if gpus and options.use_gpu is not False:
        need = options.workers * options.gpu_fraction
        room = int(gpus // need)
    elif alive > 1 or options.cpus_per_worker is not None:
        need = options.workers * worker_cpus(options.workers, options.cpus_per_worker)
        room = int(total.get("CPU", 1.0) // need)
    else:
        room = 1
    return max(1, min(runs, room))


def one_task(fn: Any, *args: Any, use_gpu: bool | None = None, cpus: float | None = None,
             retries: int = 2) -> Any:
    """``fn(*args, threads, use_gpu)`` as one Ray task with one worker's share of the cluster
    (a GPU when there is one and ``use_gpu`` allows), retried ``retries`` times; its result."""
    cpus = worker_cpus(1, cpus)
    opts = actor_options(use_gpu=use_gpu, num_cpus=cpus)
    task = ray.remote(fn).options(num_cpus=opts["num_cpus"], num_gpus=opts["num_gpus"],
                                  max_retries=retries)
    return ray.get(task.remote(*args, torch_threads_for(cpus), opts["num_gpus"] > 0))


def same_job(saved: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    """Whether a saved model's recorded job key is ``key`` (compared as JSON)."""
    import json

    return saved is not None and saved.get("key") == json.loads(json.dumps(key))
