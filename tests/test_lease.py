"""The run lease's owner identity: a rerun right after a crash takes the dead writer's lease."""

import json
import logging
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from camflow import lease as lease_mod
from camflow.lease import LEASE_TTL, LeaseKeeper, RunInUseError, RunLease


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch):
    monkeypatch.setattr(lease_mod, "CONFIRM_PAUSE", 0.0)  # no racing taker here: no need to wait


def _lease(tmp_path, **kw) -> RunLease:
    return RunLease(LocalFileSystem(), f"{tmp_path}/_runs/run=r1/lease.json", run_id="r1",
                    where=str(tmp_path), **kw)


def _plant(tmp_path, **fields) -> dict:
    """Leave an unexpired lease as a driver of this host and process would have, but ``fields``."""
    doc = {"owner": "crashed-driver", "expires": time.time() + 600, **lease_mod.identity(),
           **fields}
    path = Path(tmp_path, "_runs", "run=r1", "lease.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return doc


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def _read(lease: RunLease) -> dict:
    return json.loads(Path(lease.path).read_text())


def test_the_lease_records_who_holds_it_and_ttl_defaults_to_the_constant(tmp_path):
    lease = _lease(tmp_path)
    assert lease.ttl == LEASE_TTL and LeaseKeeper(lease).every == pytest.approx(LEASE_TTL / 3)
    with lease:
        doc = _read(lease)
    assert doc["owner"] == lease.owner
    assert (doc["host"], doc["pid"]) == (socket.gethostname(), os.getpid())
    assert doc["started"] and doc["started"] == lease_mod._started(os.getpid())
    assert doc["expires"] == pytest.approx(time.time() + LEASE_TTL, abs=5)


def test_an_unexpired_lease_of_an_exited_process_here_is_taken_over_at_once(tmp_path, caplog):
    pid = _exited_pid()
    _plant(tmp_path, pid=pid, started="proc:1")
    with caplog.at_level(logging.INFO, logger="camflow.lease"):
        lease = _lease(tmp_path).acquire()
    assert _read(lease)["owner"] == lease.owner
    assert f"pid {pid}" in caplog.text and "gone" in caplog.text
    lease.release()


def test_a_recycled_pid_counts_as_gone(tmp_path):
    # This process runs under the recorded pid, but it started at another time than the writer.
    kind = lease_mod._started(os.getpid()).split(":", 1)[0]
    _plant(tmp_path, started=f"{kind}:1")
    lease = _lease(tmp_path).acquire()
    assert _read(lease)["owner"] == lease.owner
    lease.release()


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="needs waitid to leave a zombie")
def test_a_zombie_counts_as_gone(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        _plant(tmp_path, pid=child.pid, started=lease_mod._started(os.getpid()))
        assert lease_mod._started(child.pid) == ""
        _lease(tmp_path).acquire().release()
    finally:
        child.wait()


def test_a_live_writer_here_keeps_its_lease_and_the_refusal_says_who_and_until_when(tmp_path):
    doc = _plant(tmp_path, expires=time.time() + 20.5)  # this process, its right start time
    with pytest.raises(RunInUseError) as caught:
        _lease(tmp_path).acquire()
    msg = str(caught.value)
    assert "'r1'" in msg and "crashed-driver" in msg
    assert f"on {socket.gethostname()}, pid {os.getpid()}" in msg
    assert "expires in 21 s; rerun then" in msg
    assert _read(_lease(tmp_path)) == doc  # left alone


@pytest.mark.parametrize(("fields", "exited"), [
    ({"host": "elsewhere.example"}, True),  # its pids are not ours to look up
    ({"namespace": "another-boot/pid:[1]"}, True),  # a container or boot sharing the hostname
    ({"started": None}, False),  # no start time recorded: a live pid proves nothing
], ids=["other-host", "other-namespace", "no-start-time"])
def test_a_writer_that_cannot_be_proven_gone_keeps_its_unexpired_lease(tmp_path, fields, exited):
    doc = _plant(tmp_path, **fields, **({"pid": _exited_pid()} if exited else {}))
    with pytest.raises(RunInUseError, match="expires in"):
        _lease(tmp_path).acquire()
    assert _read(_lease(tmp_path)) == doc


def test_a_lease_without_identity_is_judged_by_its_expiry_alone(tmp_path):
    path = Path(tmp_path, "_runs", "run=r1", "lease.json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"owner": "old-writer", "expires": time.time() + 600}))
    with pytest.raises(RunInUseError, match="old-writer"):
        _lease(tmp_path).acquire()
    path.write_text(json.dumps({"owner": "old-writer", "expires": time.time() - 1}))
    _lease(tmp_path).acquire().release()


def test_the_ray_job_is_recorded_only_where_ray_is_loaded_and_initialised(monkeypatch):
    context = types.SimpleNamespace(get_job_id=lambda: "01000000")
    ray = types.SimpleNamespace(is_initialized=lambda: False, get_runtime_context=lambda: context)
    monkeypatch.setitem(sys.modules, "ray", ray)
    assert "ray_job" not in lease_mod.identity()
    ray.is_initialized = lambda: True
    assert lease_mod.identity()["ray_job"] == "01000000"
    monkeypatch.delitem(sys.modules, "ray")
    assert "ray_job" not in lease_mod.identity()
