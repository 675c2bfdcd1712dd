"""A 2-proportion sweep on a two-node Ray cluster of this machine: do the trainings overlap?

    .venv/bin/python bench/cluster_sweep.py [--train 40] [--epochs 2]

Starts a head and a worker node (one CPU each) with ``ray start`` (the harness of
tests/cluster/multinode.py: token auth, temp dirs of their own, stopped by pid), a Prefect API
server of its own, then ``camflow sweep`` over proportions 0.5 and 1.0 joined through
``RAY_ADDRESS``. On a cluster, training goes to Ray Train and ``sweep.concurrent`` defaults to
as many runs as the cluster has room for (here two runs of one one-CPU worker each). It prints
each ``train-classifier`` task run's start and end as Prefect recorded them, and their overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.multinode import LocalCluster, camflow_command, free_port  # noqa: E402


def _train_runs(api: str) -> list:
    """The train-classifier task runs recorded by the Prefect API at ``api``."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs()
            return [r for r in runs if r.name.startswith("train-classifier")]

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return asyncio.run(read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=40, help="embedded training images")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    work = Path(tempfile.mkdtemp(prefix="camflow-cluster-sweep-"))
    cluster = LocalCluster()
    with temporary_settings(updates={PREFECT_SERVER_DATABASE_CONNECTION_URL:
                                     f"sqlite+aiosqlite:///{work / 'prefect.db'}"}):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=300)
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_worker(num_cpus=1, resources={"worker_node": 1})
        print(f"cluster: {len(cluster.alive_nodes())} nodes of 1 CPU; Prefect at {server.api_url}")
        sets = {"name": "cluster-sweep", "data.embedded_train": args.train,
                "data.embedded_val": 10, "data.image_size": 64, "model.pretrained": "false",
                "train.epochs": args.epochs, "train.batch_size": 8,
                "sweep.proportions": "[0.5,1.0]", "sweep.seeds": "[0]",
                "cams.scales": "[1.0]", "cams.flip": "false", "cams.methods": "[cam]",
                "postprocess.mask.bg_threshold": 0.5}
        cmd = camflow_command("sweep", work / "runs", "s1", sets)
        env = cluster.driver_env(PREFECT_API_URL=server.api_url, PYTHONUNBUFFERED="1")
        started = time.monotonic()
        log = work / "sweep.log"
        with log.open("w") as out:
            rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT).returncode
        print(f"camflow sweep: exit {rc} in {time.monotonic() - started:.0f} s (log {log})")
        if rc != 0:
            print(log.read_text()[-4000:])
            return 1
        trains = sorted(_train_runs(server.api_url), key=lambda r: r.start_time)
        for r in trains:
            print(f"  {r.name:<32} {r.start_time:%H:%M:%S.%f} -> {r.end_time:%H:%M:%S.%f} "
                  f"({r.total_run_time.total_seconds():.1f} s)")
        if len(trains) != 2:
            print(f"expected two train-classifier task runs, found {len(trains)}")
            return 1
        (a, b) = trains
        overlap = (min(a.end_time, b.end_time) - b.start_time).total_seconds()
        print(f"overlap of the two trainings: {overlap:.1f} s "
              f"({'concurrent' if overlap > 0 else 'one after another'})")
        return 0
    finally:
        cluster.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
