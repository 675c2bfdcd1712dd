"""``camflow submit``: a run submitted to a real two-node cluster outlives the shell that
submitted it (issue 17).

The head (no CPUs, with its dashboard and so the Jobs API) and a two-CPU worker are started with
the ``ray`` CLI (tests/cluster/multinode.py). A shell in a process session of its own runs
``camflow submit`` and then waits; as soon as the submission is printed, the whole session is
hung up and killed, as a dropped ssh connection would be. The run must go on on the cluster,
with its driver on the head, finish, and be read back with ``ray job status`` and ``ray job logs``.
The run starts from a seeded checkpoint, so no training: generation on the worker is what runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.multinode import RAY, LocalCluster, camflow_command, session_pids

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

VAL_IMAGES = 10
RUN_ID = "submitted"
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.start_head(num_cpus=0, dashboard=True)
        c.add_worker(num_cpus=2)
        _wait_for_jobs_api(c)
        yield c
    finally:
        c.stop()


def _wait_for_jobs_api(c: LocalCluster, timeout: float = 180) -> None:
    """The dashboard serves the Jobs API a while after ``ray start`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        done = _ray_job(c, "list")
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no Jobs API at {c.jobs_address}:\n{done.stderr[-2000:]}")
        time.sleep(2)


def _ray_job(c: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    """``ray job ARGS --address`` with the cluster's token, as a user on the head would."""
    return subprocess.run([RAY, "job", *args, "--address", c.jobs_address],
                          env=c.driver_env(), capture_output=True, text=True, timeout=120)


def _job_status(c: LocalCluster, job: str) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, read from ``ray job status``'s words."""
    done = _ray_job(c, "status", job)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    for word, status in ((f"'{job}' succeeded", "SUCCEEDED"), (f"'{job}' failed", "FAILED"),
                         (f"'{job}' was stopped", "STOPPED")):
        if word in text:
            return status
    found = re.search(rf"Status for job '{job}': (\w+)", text)
    assert found, text
    return found.group(1)


def _sets(checkpoint: str) -> dict:
    return {
        "name": "submitted",
        "data.embedded_train": 10, "data.embedded_val": VAL_IMAGES, "data.image_size": 64,
        "model.pretrained": "false", "model.checkpoint": checkpoint,
        "train.proportions": "[1.0]",
        "cams.scales": "[1.0]", "cams.flip": "false", "cams.shard_size": 2,
        "cams.methods": "[cam]",
        "postprocess.mask.bg_threshold": 0.5,
        "cluster.workers": 1,
    }


def _submit_args(output: Path, checkpoint: str, c: LocalCluster) -> list[str]:
    args = camflow_command("submit", output, RUN_ID, _sets(checkpoint))
    return [*args, "--address", c.jobs_address]


def test_submitted_run_outlives_its_shell(cluster, prefect_harness, embedded_checkpoint,
                                          tmp_path):
    from prefect.settings import PREFECT_API_URL

    output = tmp_path / "runs"
    args = _submit_args(output, embedded_checkpoint, cluster)
    log = tmp_path / "shell.log"
    # The shell submits, then lingers as an interactive session would.
    script = f"{subprocess.list2cmdline(args)}; echo SUBMIT-EXIT $?; sleep 900"
    env = cluster.driver_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS")  # the shell is not a driver: it only talks to the Jobs API
    started = time.monotonic()
    with log.open("w") as out:
        shell = subprocess.Popen(["bash", "-c", script], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 cwd=Path(__file__).resolve().parents[2])
    try:
        while "SUBMIT-EXIT" not in log.read_text():
            assert shell.poll() is None, log.read_text()
            assert time.monotonic() - started < 180, log.read_text()
            time.sleep(0.2)
        submitted_after = time.monotonic() - started
        text = log.read_text()
        assert "SUBMIT-EXIT 0" in text, text
        assert f"submitted run {RUN_ID} as Ray job {RUN_ID}" in text, text
        assert f"ray job logs {RUN_ID} --address {cluster.jobs_address}" in text, text
    finally:
        # The connection drops: the shell's whole session is hung up, then killed.
        for sig in (signal.SIGHUP, signal.SIGKILL):
            for pid in session_pids(shell.pid):
                os.kill(pid, sig)
            time.sleep(0.5)
        shell.wait()
    assert not session_pids(shell.pid)
    status = _job_status(cluster, RUN_ID)
    assert status in ("PENDING", "RUNNING"), (
        f"the run was {status} before the shell was gone ({submitted_after:.0f} s)")

    # A second submission of the same run while it goes on is refused, before it starts.
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180,
                           cwd=Path(__file__).resolve().parents[2])
    assert again.returncode == 2, again.stderr
    assert f"run {RUN_ID} is still going on the cluster (job {RUN_ID})" in again.stderr

    deadline = time.monotonic() + RUN_TIMEOUT
    while (status := _job_status(cluster, RUN_ID)) != "SUCCEEDED":
        assert status in ("PENDING", "RUNNING"), (
            status + _ray_job(cluster, "logs", RUN_ID).stdout[-6000:])
        assert time.monotonic() < deadline, status
        time.sleep(3)
    logs = _ray_job(cluster, "logs", RUN_ID).stdout
    run_dir = output / RUN_ID
    assert str(run_dir) in logs, logs[-4000:]
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "report.md").is_file()

    check_seeds(run_dir)
    # The driver ran on the head (the node without CPUs), not in the shell.
    head = [n["id"] for n in cluster.alive_nodes() if not n["resources"].get("CPU")]
    driver = cluster.query(
        "from ray.job_submission import JobSubmissionClient\n"
        f"c = JobSubmissionClient({cluster.jobs_address!r})\n"
        f"print(json.dumps(c.get_job_info({RUN_ID!r}).driver_node_id))")
    assert [driver] == head


def check_seeds(run_dir: Path) -> None:
    """One seed row per val image and class of its label."""
    from camflow.data.manifest import read_manifest
    from camflow.shards import ShardStore

    manifest = read_manifest(str(run_dir / "manifests" / "val.parquet"))
    seeds = ShardStore(str(run_dir / "outputs"), "p1").read("seeds", "cam")
    pairs = list(zip(seeds["image_id"].to_pylist(), seeds["class_id"].to_pylist()))
    assert len(pairs) == len(set(pairs)) == sum(len(set(r["labels"]))
                                                 for r in manifest.to_pylist())


def test_submit_flow_resubmits_the_run_and_it_resumes(cluster, prefect_harness,
                                                      embedded_checkpoint, tmp_path_factory):
    """The scheduled deployments' flow, run as a Prefect worker would (a process of its own,
    with the cluster's token): the same run again is a second job (``<run id>-2``), which finds
    every shard committed and redoes none."""
    from prefect.settings import PREFECT_API_URL

    run_dir = _first_run_dir(tmp_path_factory)
    markers = sorted((run_dir / "outputs" / "_commits").rglob("*.json"))
    assert markers
    before = {m: m.stat().st_mtime_ns for m in markers}
    overrides = {**_sets(embedded_checkpoint), "output": str(run_dir.parent), "run_id": RUN_ID}
    script = (
        "import json, sys, yaml\n"
        "from flows.config import load_config\n"
        "from flows.submit import submit\n"
        "overrides = {k: yaml.safe_load(str(v)) for k, v in json.loads(sys.argv[1]).items()}\n"
        "result = submit(load_config(None, overrides), address=sys.argv[2], poll_seconds=2)\n"
        "print(json.dumps(result))\n")
    env = cluster.driver_env(PREFECT_API_URL=PREFECT_API_URL.value())
    env.pop("RAY_ADDRESS")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(overrides),
                           cluster.jobs_address], env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["submission_id"] == f"{RUN_ID}-2"
    assert result["status"] == "SUCCEEDED"
    assert {m: m.stat().st_mtime_ns for m in markers} == before
    check_seeds(run_dir)


def _first_run_dir(factory) -> Path:
    """The run directory of test_submitted_run_outlives_its_shell (its tmp_path)."""
    base = factory.getbasetemp()
    found = sorted(base.glob(f"test_submitted_run_outlives_i*/runs/{RUN_ID}"))
    assert found, f"no run of the first test under {base}"
    return found[-1]


def test_submit_refuses_relative_paths(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "submit", "--output", "runs", "--address",
         "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert "output: runs is a relative path" in done.stderr
