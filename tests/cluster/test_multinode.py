"""camflow on a real two-node Ray cluster (issue 14).

A head and a worker node (``worker_node`` resource), one CPU each, are started with the ``ray``
CLI (tests/cluster/multinode.py). ``camflow run`` joins them through ``RAY_ADDRESS`` in a
subprocess: this pytest process may hold the session's own local Ray (``ray_session``) and never
joins the cluster. Test A is a plain run; test B is the same run whose worker node's raylet is
SIGKILLed mid-generation (while the worker's CAM actor is on a shard, or at the latest when the
first shard is committed): the head alone must finish it, with every seed exactly once and A's
metrics. Test B follows test A on the same cluster (module scope): it uses up the worker node.

Both runs start from one seeded checkpoint (``model.checkpoint``) instead of training: with
``cluster.workers=2`` training would be Ray Train DDP over both nodes, about a minute a run on two
cores, and generation, the stage that runs on the cluster's actors and that the kill hits, is what
these tests are about. From a fixed checkpoint every later stage is deterministic: same config,
same shards, and the driver's metrics are sums of per-shard count arrays, whatever the order the
shards arrive in. Two runs give identical metrics.json values (checked on several pairs), which
test B compares with a tolerance of 1e-6: a shard lost with the node and merged twice, or never,
would show there as well as in the seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.multinode import LocalCluster, NodeWatch, camflow_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

VAL_IMAGES = 12
SHARD_SIZE = 1
SHARDS = VAL_IMAGES // SHARD_SIZE
METHODS = ("cam", "layercam")
RUN_LABEL = "p1"  # the training run of proportion 1.0: outputs/.../run=p1
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU) + worker (1 CPU, ``worker_node``); stopped by pid, only what it started."""
    c = LocalCluster()
    try:
        c.start_head(num_cpus=1)
        c.add_worker(num_cpus=1, resources={"worker_node": 1})
        alive = c.alive_nodes()
        assert len(alive) == 2, alive
        assert sum(n["resources"].get("worker_node", 0) for n in alive) == 1, alive
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def prefect_api(prefect_harness):
    """The session's Prefect API, for the camflow drivers (subprocesses)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """One output root for both runs: the embedded benchmark is built once, under data/."""
    return tmp_path_factory.mktemp("multinode-runs")


def camflow_args(run_id: str, output: Path, checkpoint: str) -> list[str]:
    sets = {
        "name": "multinode",
        "data.embedded_train": 10, "data.embedded_val": VAL_IMAGES, "data.image_size": 64,
        "model.pretrained": "false", "model.checkpoint": checkpoint,
        "train.proportions": "[1.0]",
        "cams.scales": "[1.0]", "cams.flip": "false", "cams.shard_size": SHARD_SIZE,
        "cams.methods": f"[{','.join(METHODS)}]",
        # A fixed background score: no calibration task (a Ray worker starting torch, seconds).
        "postprocess.mask.bg_threshold": 0.5,
        # Two CAM actors of one CPU each (cluster.cpus_per_worker's default on a multi-node
        # cluster) on two one-CPU nodes: one is on each node. Once the worker node is gone, Ray
        # Data retries a shard that its actor held on that actor's replacement, which the head
        # can place only when its own actor has been through every other shard and is let go:
        # the run finishes later, but it finishes.
        "cluster.workers": 2,
    }
    return camflow_command("run", output, run_id, sets)


def run_camflow(cluster: LocalCluster, api: str, args: list[str], log: Path, *, poll=None) -> int:
    """Run ``args`` as a driver of ``cluster`` reporting to Prefect ``api`` (rather than an
    ephemeral server of its own); ``poll()`` is called every 50 ms meanwhile."""
    env = cluster.driver_env(PREFECT_API_URL=api, PYTHONUNBUFFERED="1")
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[2], start_new_session=True)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"camflow run still running after {RUN_TIMEOUT} s; "
                                         f"log tail:\n{log.read_text()[-4000:]}")
                if poll is not None:
                    poll()
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode


def _committed(run_dir: Path) -> int:
    """Shards fully committed: a shard's decode marker is written after every method's."""
    markers = run_dir / "outputs" / "_commits" / f"run={RUN_LABEL}" / "method=decode"
    try:
        return sum(1 for e in os.scandir(markers) if e.name.endswith(".json"))
    except FileNotFoundError:
        return 0


def check_exactly_once(run_dir: Path) -> None:
    """One seed row per accepted val image and class of its label, for every method."""
    from camflow.data.manifest import read_manifest
    from camflow.shards import ShardStore

    manifest = read_manifest(str(run_dir / "manifests" / "val.parquet"))
    assert manifest.num_rows == VAL_IMAGES
    store = ShardStore(str(run_dir / "outputs"), RUN_LABEL)
    assert len(store.committed("decode")) == SHARDS
    rejects = store.read("rejects")
    rejected = set(rejects["image_id"].to_pylist()) if rejects.num_rows else set()
    want = sorted((r["image_id"], c) for r in manifest.to_pylist()
                  if r["image_id"] not in rejected for c in sorted(set(r["labels"])))
    assert len(want) == sum(len(set(r["labels"])) for r in manifest.to_pylist()
                            if r["image_id"] not in rejected)
    for method in METHODS:
        seeds = store.read("seeds", method)
        got = sorted(zip(seeds["image_id"].to_pylist(), seeds["class_id"].to_pylist()))
        assert got == want, method


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())[RUN_LABEL]["methods"]


@pytest.fixture(scope="module")
def run_a(cluster, prefect_api, embedded_checkpoint, output):
    watch = NodeWatch(cluster.nodes[1])
    log = output / "a.log"
    rc = run_camflow(cluster, prefect_api, camflow_args("a", output, embedded_checkpoint), log,
                     poll=watch.sample)
    return {"rc": rc, "log": log, "run_dir": output / "a", "watch": watch}


def test_a_run_joins_the_cluster_and_uses_the_worker_node(cluster, run_a):
    assert run_a["rc"] == 0, run_a["log"].read_text()[-4000:]
    check_exactly_once(run_a["run_dir"])
    # Two nodes of one CPU and two CAM actors of one CPU: one is placed on each node.
    assert run_a["watch"].hosted("CamWorker"), sorted(run_a["watch"].titles)
    assert set(_metrics(run_a["run_dir"])) == set(METHODS)
    assert cluster.nodes[1].raylet_pid()  # the worker node lived through the run


def test_b_run_survives_losing_the_worker_node_mid_generation(cluster, prefect_api, run_a,
                                                             embedded_checkpoint, output):
    assert run_a["rc"] == 0, "test B compares with run A, which failed"
    worker = cluster.nodes[1]
    watch = NodeWatch(worker)
    raylet = worker.raylet_pid()
    run_dir = output / "b"
    kill: dict[str, object] = {}

    def kill_mid_generation() -> None:
        # The worker node's raylet goes down as soon as its CAM actor is at work on a shard (so
        # that shard must be redone elsewhere), or else at the first committed shard marker:
        # the Finisher actors commit, and they are the last actors to come up; on a slow
        # machine the CAM actors may have been through every shard by then.
        if kill:
            return
        busy = NodeWatch.busy(watch.sample(), "CamWorker")
        done = _committed(run_dir)
        if busy or done:
            os.kill(raylet, signal.SIGKILL)
            kill.update(committed=done, worker_cam_busy=busy, titles=sorted(watch.titles))

    log = output / "b.log"
    rc = run_camflow(cluster, prefect_api, camflow_args("b", output, embedded_checkpoint), log,
                     poll=kill_mid_generation)
    (output / "b-kill.json").write_text(json.dumps(kill))  # what the kill hit, for a post-mortem
    assert rc == 0, log.read_text()[-4000:]
    assert kill, "no shard was committed while the run lasted: the kill never happened"
    assert kill["committed"] < SHARDS, f"every shard was committed before the kill: {kill}"
    assert not Path(f"/proc/{raylet}").exists()
    assert len(cluster.alive_nodes()) == 1  # the head alone finished the run
    check_exactly_once(run_dir)
    got, want = _metrics(run_dir), _metrics(run_a["run_dir"])
    assert set(got) == set(want) == set(METHODS)
    for method in METHODS:
        assert got[method].keys() == want[method].keys(), method
        assert got[method] == pytest.approx(want[method], rel=0, abs=1e-6), method

