"""camflow runs as Ray jobs: the driver runs on the cluster, not in the shell that started it.

A run driven from a shell (``ray exec``, ``kubectl exec``, ssh) dies with that shell: a dropped
connection hangs it up, and the driver, its actors and its tasks go with it. Submitted through
Ray's Jobs API (the head's dashboard, port 8265), the same ``camflow run`` is started by Ray's job
supervisor on the cluster; the submitter may go away at once, and ``ray job status/logs`` (or
:func:`job_outcome`) read the run back.

The resolved config travels as the job's working directory (one file, uploaded by the client), so
the cluster needs only the image's code, not the submitter's files. Each submission is tagged with
its run id and config name (job metadata), so a later submission can see what is still running.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

CONFIG_FILE = "camflow-run.yaml"
COMMANDS = ("run", "sweep")
# Ray's job metadata keys for what a submission is.
RUN_ID, CONFIG_NAME = "camflow_run_id", "camflow_config"
ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)


@dataclass(frozen=True)
class SubmittedRun:
    """One camflow run submitted to a cluster: where, which job, which run."""

    address: str
    submission_id: str
    run_id: str

    def commands(self) -> list[str]:
        """The ``ray job`` commands that read this run back."""
        where = f"--address {self.address}"
        return [f"ray job status {self.submission_id} {where}",
                f"ray job logs {self.submission_id} {where} --follow",
                f"ray job stop {self.submission_id} {where}"]


@dataclass(frozen=True)
class JobOutcome:
    status: JobStatus
    message: str
    logs: str


def client(address: str | None) -> JobSubmissionClient:
    """A Jobs API client for ``address`` (``http://HEAD:8265``); None reads Ray's own default
    (``RAY_API_SERVER_ADDRESS``, then ``RAY_ADDRESS``). Token auth comes from Ray's env too."""
    return JobSubmissionClient(address)


def camflow_jobs(jobs: JobSubmissionClient, *, name: str | None = None,
                 active_only: bool = False) -> list[JobDetails]:
    """Submissions of camflow runs on the cluster (of config ``name``), oldest first."""
    found = [job for job in jobs.list_jobs()
             if (job.metadata or {}).get(RUN_ID)
             and (name is None or job.metadata.get(CONFIG_NAME) == name)
             and (not active_only or job.status in ACTIVE)]
    return sorted(found, key=lambda job: job.start_time or 0)


def _submission_id(run_id: str, taken: set[str]) -> str:
    """The run id, or ``<run id>-2``, ``-3``... when the run was submitted before (a resume):
    Ray keeps every submission id once used."""
    candidate, n = run_id, 1
    while candidate in taken:
        n += 1
        candidate = f"{run_id}-{n}"
    return candidate


def submit_run(address: str | None, *, command: str, config_yaml: str, run_id: str,
               name: str, env: Mapping[str, str] | None = None) -> SubmittedRun:
    """Submit ``camflow COMMAND`` of the resolved config ``config_yaml`` as a Ray job; returns
    at once. Refuses (``RuntimeError``) while a job of the same run is pending or running: its
    lease would stop the second driver anyway, after it had started up."""
    if command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
    jobs = client(address)
    existing = [job for job in jobs.list_jobs() if (job.metadata or {}).get(RUN_ID) == run_id]
    if running := [job.submission_id for job in existing if job.status in ACTIVE]:
        raise RuntimeError(f"run {run_id} is still going on the cluster (job {running[0]}); "
                           "wait for it or stop it first")
    submission_id = _submission_id(run_id, {job.submission_id for job in existing})
    with tempfile.TemporaryDirectory(prefix="camflow-submit-") as tmp:
        (Path(tmp) / CONFIG_FILE).write_text(config_yaml)
        jobs.submit_job(
            entrypoint=f"camflow {command} {CONFIG_FILE} --run-id {run_id}",
            submission_id=submission_id,
            runtime_env={"working_dir": tmp, "env_vars": dict(env or {})},
            metadata={RUN_ID: run_id, CONFIG_NAME: name})
    return SubmittedRun(jobs.get_address(), submission_id, run_id)


def job_outcome(address: str | None, submission_id: str) -> JobOutcome:
    jobs = client(address)
    info = jobs.get_job_info(submission_id)
    return JobOutcome(info.status, info.message or "", jobs.get_job_logs(submission_id))


def wait_for_job(address: str | None, submission_id: str, *, poll: float = 10.0,
                 timeout: float | None = None,
                 on_status: Callable[[JobStatus], None] | None = None) -> JobOutcome:
    """Poll until the job ends (or ``timeout`` seconds pass: TimeoutError); ``on_status`` hears
    every change of status."""
    jobs = client(address)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        status = jobs.get_job_status(submission_id)
        if status != last and on_status is not None:
            on_status(status)
        last = status
        if status.is_terminal():
            return job_outcome(address, submission_id)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still {status} after {timeout} s")
        time.sleep(poll)
