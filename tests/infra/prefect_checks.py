"""infra/prefect.yaml read with Prefect's own models and schemas, closed to unknown keys.

Prefect's `prefect deploy` model (prefect.cli.deploy._models) ignores keys it does not know, and
the process worker ignores unknown job variables: a typo'd key (`concurency_limit`) is a setting
that silently does nothing. Here both are closed: the same models with extra="forbid", and the
worker's job-variables schema with additionalProperties: false.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
from prefect.cli.deploy import _models
from prefect.cli.deploy._config import _handle_deprecated_schedule_fields
from pydantic import ConfigDict, Field, ValidationError

from tests.infra.common import FLOW_NAMES, closed, schema_problems

_FORBID = ConfigDict(extra="forbid")


class StrictWorkPoolConfig(_models.WorkPoolConfig):
    model_config = _FORBID


class StrictConcurrencyLimitSpec(_models.ConcurrencyLimitSpec):
    model_config = _FORBID


class StrictDeploymentConfig(_models.DeploymentConfig):
    model_config = _FORBID

    concurrency_limit: int | StrictConcurrencyLimitSpec | None = None
    work_pool: StrictWorkPoolConfig | None = None


class StrictPrefectYamlModel(_models.PrefectYamlModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    # Where Prefect's docs put the YAML anchors that deployments share (`definitions:`).
    definitions: dict[str, Any] | None = None
    deployments: list[StrictDeploymentConfig] = Field(default_factory=list)


# The inherited fields' annotations name Prefect's types (Optional, ScheduleItem, ...): resolve
# them in Prefect's module, ours beside them.
for _model in (StrictWorkPoolConfig, StrictConcurrencyLimitSpec, StrictDeploymentConfig,
               StrictPrefectYamlModel):
    _model.model_rebuild(_types_namespace={**vars(_models), **globals()})


def prefect_yaml_problems(raw: dict[str, Any]) -> list[str]:
    """Problems Prefect's own loader (the model `prefect deploy` validates with) or we find."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        model = StrictPrefectYamlModel.model_validate(raw)
    except ValidationError as exc:
        return [f"prefect.yaml does not validate: {exc}"]
    problems = []
    for d in raw.get("deployments") or []:
        # What `prefect deploy` does with the legacy single `schedule` key (deprecated).
        try:
            _handle_deprecated_schedule_fields(d)
        except ValueError as exc:
            problems.append(f"{d.get('name')}: {exc}")
        if "schedule" in d:
            problems.append(f"{d.get('name')}: `schedule` is deprecated; use `schedules`")
    if not model.deployments:
        problems.append("no deployments")
    names = [d.name for d in model.deployments]
    if None in names or len(set(names)) != len(names):
        problems.append(f"deployment names must be present and unique: {names}")
    steps = [next(iter(step)) for step in model.pull or []]
    if "prefect.deployments.steps.set_working_directory" not in steps:
        problems.append("pull steps must set the working directory")
    crons = []
    for d in model.deployments:
        if d.entrypoint not in FLOW_NAMES:
            problems.append(f"{d.name}: entrypoint {d.entrypoint!r} is not one of {sorted(FLOW_NAMES)}")
        if not (d.work_pool and d.work_pool.name):
            problems.append(f"{d.name}: no work pool")
        if "config" not in d.parameters:
            problems.append(f"{d.name}: parameters lack `config`")
        for schedule in d.schedules or []:
            cron = getattr(schedule, "cron", None)
            if cron is None:
                continue
            try:
                CronSchedule(cron=cron, timezone=schedule.timezone or "UTC")
            except ValidationError:
                problems.append(f"{d.name}: invalid cron {cron!r}")
            crons.append(cron)
    if not crons:
        problems.append("no deployment has a cron schedule (the nightly run)")
    return problems



@functools.cache
def process_job_variables_schema() -> dict[str, Any]:
    """The process worker's job variables (its base job template), closed to unknown keys."""
    from prefect.workers.process import ProcessWorker

    return closed(ProcessWorker.get_default_base_job_template()["variables"])


def job_variables_problems(raw: dict[str, Any]) -> list[str]:
    """Each deployment's work_pool.job_variables against the process worker's schema."""
    schema = process_job_variables_schema()
    validator = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)(schema)
    problems = []
    for d in raw.get("deployments") or []:
        variables = (d.get("work_pool") or {}).get("job_variables") or {}
        problems += schema_problems(validator, variables, f"{d.get('name')}: job_variables ")
    return problems


HEARTBEAT = "prefect.flow-run.heartbeat"  # what Prefect's flow engine emits (flow_engine.py)
# The heartbeat interval of the deployments (job variables), and how many a zombie misses.
HEARTBEAT_SECONDS_KEY = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


def automation_problems(doc: dict[str, Any], prefect_raw: dict[str, Any] | None = None) -> list[str]:
    """infra/prefect-automations.yaml: Prefect's own automation model, and a zombie-run trigger
    that can fire: after the heartbeat events Prefect emits, within more than one interval."""
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    from tests.infra.common import PREFECT_YAML, load_yaml

    prefect_raw = prefect_raw or load_yaml(PREFECT_YAML)
    intervals = {int(d["work_pool"]["job_variables"]["env"][HEARTBEAT_SECONDS_KEY])
                 for d in prefect_raw["deployments"]}
    problems = []
    for raw in doc.get("automations", []):
        try:
            automation = AutomationCore.model_validate(raw)
        except ValidationError as err:
            problems.append(f"{raw.get('name')}: {err}")
            continue
        trigger = automation.trigger
        events = set(trigger.after) | set(trigger.expect)
        states = {"Completed", "Failed", "Cancelled", "Crashed"}
        known = {HEARTBEAT} | {f"prefect.flow-run.{s}" for s in states}
        if unknown := events - known:
            problems.append(f"{automation.name}: no such event {sorted(unknown)}")
        if trigger.posture != "Proactive":
            problems.append(f"{automation.name}: a zombie trigger must be Proactive (fires on "
                            "events that do not come)")
        if HEARTBEAT not in trigger.expect or HEARTBEAT not in trigger.after:
            problems.append(f"{automation.name}: must follow a heartbeat and expect the next")
        if trigger.within.total_seconds() <= 2 * max(intervals):
            problems.append(f"{automation.name}: within {trigger.within} is under two heartbeat "
                            f"intervals ({max(intervals)} s): live runs would be crashed")
    return problems
