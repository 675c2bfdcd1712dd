"""The ``camflow-submit`` flow's order of things, with the cluster's Jobs API faked: a run of the
same config still going is waited for first; a failed job fails the flow run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster import jobs
from flows.config import load_config
from flows.submit import prepare, relative_paths, submit


@pytest.fixture
def fake_cluster(monkeypatch):
    calls: list[tuple] = []
    state = {"active": ["nightly-old"], "outcome": jobs.JobStatus.SUCCEEDED}

    def camflow_jobs(client, *, name=None, active_only=False):
        calls.append(("list", name, active_only))
        return [SimpleNamespace(submission_id=s) for s in state["active"]]

    def submit_run(address, *, command, config_yaml, run_id, name, env):
        calls.append(("submit", command, run_id, name))
        assert f"run_id: {run_id}" in config_yaml
        return jobs.SubmittedRun(address, run_id, run_id)

    def wait_for_job(address, submission_id, *, poll, on_status=None):
        calls.append(("wait", submission_id))
        return jobs.JobOutcome(state["outcome"], "boom" if state["outcome"] != "SUCCEEDED"
                               else "", "a log line\n")

    monkeypatch.setattr(jobs, "client", lambda address: None)
    monkeypatch.setattr(jobs, "camflow_jobs", camflow_jobs)
    monkeypatch.setattr(jobs, "submit_run", submit_run)
    monkeypatch.setattr(jobs, "wait_for_job", wait_for_job)
    return calls, state


def _cfg(tmp_path):
    return load_config(None, {"name": "nightly", "output": str(tmp_path), "run_id": "n1"})


def test_waits_for_the_earlier_run_then_submits_and_follows(prefect_harness, fake_cluster,
                                                             tmp_path):
    calls, _ = fake_cluster
    result = submit(_cfg(tmp_path), address="http://head:8265", poll_seconds=0.01)
    assert calls == [("list", "nightly", True), ("wait", "nightly-old"),
                     ("submit", "run", "n1", "nightly"), ("wait", "n1")]
    assert result["status"] == "SUCCEEDED" and result["submission_id"] == "n1"


def test_a_failed_job_fails_the_flow_run(prefect_harness, fake_cluster, tmp_path):
    calls, state = fake_cluster
    state["active"], state["outcome"] = [], jobs.JobStatus.FAILED
    with pytest.raises(RuntimeError, match="Ray job n1 FAILED: boom"):
        submit(_cfg(tmp_path), address="http://head:8265", command="sweep", poll_seconds=0.01)
    assert ("submit", "sweep", "n1", "nightly") in calls


def test_prepare_fixes_the_run_id_and_refuses_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect:4200/api")
    cfg = load_config(None, {"name": "x", "output": str(tmp_path)})
    sub = prepare(cfg, {"EXTRA": "1"})
    assert sub.run_id.startswith("x-") and f"run_id: {sub.run_id}" in sub.config_yaml
    assert sub.env["PREFECT_API_URL"] == "http://prefect:4200/api" and sub.env["EXTRA"] == "1"
    assert not any("KEY" in k or "SECRET" in k or "TOKEN" in k for k in sub.env)
    relative = load_config(None, {"output": "runs", "model.checkpoint": "m.safetensors",
                                  "model.pretrained": "embedded"})
    assert relative_paths(relative) == ["output: runs is a relative path",
                                        "model.checkpoint: m.safetensors is a relative path"]
    with pytest.raises(ValueError, match="output: runs is a relative path"):
        prepare(relative)


def test_submission_ids_stay_unique():
    assert jobs._submission_id("r", set()) == "r"
    assert jobs._submission_id("r", {"r", "r-2"}) == "r-3"
