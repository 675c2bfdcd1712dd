"""A ``camflow run`` whose driver is SIGKILLed mid-generation, rerun at once (issue 14).

The first thing a user does after a crash is to run the same command again. The dead driver's
lease is still unexpired then; it must be taken over at once (its owner is provably gone: same
host, its pid dead), and the rerun must finish the run without redoing a committed shard or
writing any row twice.

The driver is a subprocess with a local Ray of its own, reporting to the session's Prefect API.
It is killed, with every process it started (its Ray), as a crashed machine would lose them.
Both runs start from one seeded checkpoint instead of training, as in tests/cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.multinode import camflow_command, session_pids

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VAL_IMAGES = 16
SHARD_SIZE = 2
SHARDS = VAL_IMAGES // SHARD_SIZE
RUN_TIMEOUT = 420
REPO = Path(__file__).resolve().parents[2]


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``, those that appear meanwhile included."""
    deadline = time.monotonic() + 30
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _markers(run_dir: Path) -> dict[str, int]:
    """Committed shard -> its decode marker's mtime (a shard's last marker)."""
    root = run_dir / "outputs" / "_commits" / "run=p1" / "method=decode"
    try:
        return {e.name: e.stat().st_mtime_ns for e in os.scandir(root) if e.name.endswith(".json")}
    except FileNotFoundError:
        return {}


def test_a_rerun_right_after_the_driver_is_killed_takes_over_and_finishes(
        tmp_path, prefect_harness, embedded_checkpoint):
    from prefect.settings import PREFECT_API_URL

    sets = {
        "name": "crash",
        "data.embedded_train": 10, "data.embedded_val": VAL_IMAGES, "data.image_size": 64,
        "model.pretrained": "false", "model.checkpoint": embedded_checkpoint,
        "train.proportions": "[1.0]",
        "cams.scales": "[1.0]", "cams.flip": "false", "cams.shard_size": SHARD_SIZE,
        "cams.methods": "[cam]", "postprocess.mask.bg_threshold": 0.5,
    }
    args = camflow_command("run", tmp_path / "runs", "r1", sets)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONUNBUFFERED="1")
    run_dir = tmp_path / "runs" / "r1"

    first_log = tmp_path / "first.log"
    with first_log.open("w") as out:
        first = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not _markers(run_dir):
            assert first.poll() is None, f"the first run ended early:\n{first_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)  # the driver first, as a crash would
        first.wait()
    finally:
        _kill_session(first.pid)  # then the local Ray it started
    before = _markers(run_dir)
    assert 0 < len(before) < SHARDS, f"the kill did not come mid-generation: {sorted(before)}"
    lease = json.loads((run_dir / "outputs" / "_runs" / "run=p1" / "lease.json").read_text())
    assert lease["expires"] > time.time(), "the dead driver's lease had already expired"

    second_log = tmp_path / "second.log"
    started = time.monotonic()
    with second_log.open("w") as out:
        rc = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True, timeout=RUN_TIMEOUT).returncode
    log = second_log.read_text()
    assert rc == 0, log[-4000:]
    assert "RunInUseError" not in log
    print(f"rerun finished in {time.monotonic() - started:.0f} s")

    after = _markers(run_dir)
    assert len(after) == SHARDS
    assert {name: after[name] for name in before} == before, "committed shards were redone"
    from camflow.data.manifest import read_manifest
    from camflow.shards import ShardStore

    manifest = read_manifest(str(run_dir / "manifests" / "val.parquet"))
    store = ShardStore(str(run_dir / "outputs"), "p1")
    seeds = store.read("seeds", "cam")
    got = sorted(zip(seeds["image_id"].to_pylist(), seeds["class_id"].to_pylist()))
    want = sorted((r["image_id"], c) for r in manifest.to_pylist() for c in sorted(set(r["labels"])))
    assert got == want
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["p1"]["methods"]["cam"]["seed_mIoU"] <= 1
