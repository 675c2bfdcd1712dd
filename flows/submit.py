"""A camflow run on a Ray cluster as a Ray job: its driver lives on the cluster's head.

``camflow submit`` and the ``camflow-submit`` flow (the scheduled deployments of
infra/prefect.yaml) both come here. The flow submits and then follows the job; if the process that
runs the flow goes away (a Prefect worker restarted, its machine lost), the run goes on, and the
next night's flow run first waits for it, as the deployment's concurrency limit would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.config import RunConfig, dump_config
from flows.pipeline import as_config, new_run_id
from tasks.jobs import active_ray_jobs, await_ray_job, submit_ray_job

# Settings of the submitting process that a submitted run takes along: where its flow runs are
# recorded, and camflow's own logs with them. Credentials never travel: the cluster has its own.
SUBMITTED_ENV = ("PREFECT_API_URL", "PREFECT_LOGGING_EXTRA_LOGGERS")


@dataclass(frozen=True)
class Submission:
    """What goes to the cluster: the resolved config (run id fixed) and the run's environment."""

    run_id: str
    name: str
    config_yaml: str
    env: dict[str, str]


def relative_paths(cfg: RunConfig) -> list[str]:
    """The local paths of ``cfg`` that are relative: on the cluster they would resolve inside
    the job's temporary working directory."""
    paths = {"output": cfg.output, "data.root": cfg.data.root,
             "model.checkpoint": cfg.model.checkpoint, "model.pretrained": cfg.model.pretrained}
    return [f"{key}: {value} is a relative path" for key, value in paths.items()
            if isinstance(value, str) and value and "://" not in value
            and value not in ("imagenet", "embedded") and not Path(value).is_absolute()]


def prepare(cfg: RunConfig, env: Mapping[str, str] | None = None) -> Submission:
    """The submission of ``cfg``; ValueError when its paths cannot work on a cluster."""
    if problems := relative_paths(cfg):
        raise ValueError(f"{'; '.join(problems)}, but the run is to go on the cluster")
    run_id = cfg.run_id or new_run_id(cfg.name)
    run_env = {key: os.environ[key] for key in SUBMITTED_ENV if os.environ.get(key)}
    run_env.update(env or {})
    return Submission(run_id, cfg.name, dump_config(cfg.model_copy(update={"run_id": run_id})),
                      run_env)


@flow(name="camflow-submit", log_prints=True)
def submit(config: RunConfig | dict[str, Any] | None = None, address: str | None = None,
           command: str = "run", wait: bool = True, poll_seconds: float = 30.0) -> dict[str, Any]:
    """Run ``camflow COMMAND`` (run or sweep) on the Ray cluster whose Jobs API is ``address``
    (``http://HEAD:8265``), after any run of the same config still going there."""
    cfg = as_config(config)
    log = get_run_logger()
    for earlier in active_ray_jobs(address, cfg.name):
        log.info("a run of %s is still going (Ray job %s): waiting for it first", cfg.name, earlier)
        await_ray_job(address, earlier, poll=poll_seconds)
    sub = prepare(cfg)
    submitted = submit_ray_job(address, command, sub.config_yaml, sub.run_id, sub.name, sub.env)
    if not wait:
        return submitted
    return {**submitted, **await_ray_job(address, submitted["submission_id"], poll=poll_seconds)}
