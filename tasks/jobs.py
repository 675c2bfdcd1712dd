"""Prefect tasks: a camflow run handed to a Ray cluster as a Ray job, and followed there."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from cluster import jobs
from tasks.common import RETRIED


@task(name="submit-ray-job", **RETRIED)
def submit_ray_job(address: str | None, command: str, config_yaml: str, run_id: str, name: str,
                   env: dict[str, str]) -> dict[str, Any]:
    submitted = jobs.submit_run(address, command=command, config_yaml=config_yaml,
                                run_id=run_id, name=name, env=env)
    get_run_logger().info("run %s submitted as Ray job %s; read it back with: %s", run_id,
                          submitted.submission_id, "; ".join(submitted.commands()))
    return {"address": submitted.address, "submission_id": submitted.submission_id,
            "run_id": run_id}


@task(name="active-ray-jobs")
def active_ray_jobs(address: str | None, name: str) -> list[str]:
    """Submission ids of the runs of config ``name`` still going on the cluster."""
    return [job.submission_id for job in
            jobs.camflow_jobs(jobs.client(address), name=name, active_only=True)]


@task(name="await-ray-job")
def await_ray_job(address: str | None, submission_id: str, poll: float = 30.0) -> dict[str, Any]:
    """Wait for the job to end; the job's log goes to this task's log. A failed or stopped job
    fails the task (no retry here: the run itself resumes when submitted again)."""
    log = get_run_logger()
    outcome = jobs.wait_for_job(address, submission_id, poll=poll,
                                on_status=lambda s: log.info("Ray job %s: %s", submission_id, s))
    log.info("log of Ray job %s:\n%s", submission_id, outcome.logs[-20000:])
    if outcome.status != jobs.JobStatus.SUCCEEDED:
        raise RuntimeError(f"Ray job {submission_id} {outcome.status}: {outcome.message}")
    return {"submission_id": submission_id, "status": str(outcome.status)}
