"""infra/prefect.yaml: Prefect's own deploy model (closed to unknown keys), the process worker's
job-variables schema, and the flows and run configs the deployments name."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.common import FLOW_NAMES, PREFECT_AUTOMATIONS, ROOT, drop, load_yaml, put, rename
from tests.infra.prefect_checks import (
    automation_problems,
    job_variables_problems,
    prefect_yaml_problems,
)


@pytest.fixture(scope="module")
def flows_by_entrypoint() -> dict[str, Any]:
    """Each prefect.yaml entrypoint loaded the way a Prefect worker loads it (from the root)."""
    from prefect.flows import load_flow_from_entrypoint

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return {e: load_flow_from_entrypoint(e, use_placeholder_flow=False) for e in FLOW_NAMES}
    finally:
        os.chdir(cwd)


def test_prefect_yaml_loads_with_prefects_model(prefect_raw):
    assert prefect_yaml_problems(prefect_raw) == []


def test_prefect_entrypoints_resolve_to_flows(prefect_raw, flows_by_entrypoint):
    from prefect import Flow

    for deployment in prefect_raw["deployments"]:
        flow = flows_by_entrypoint[deployment["entrypoint"]]
        assert isinstance(flow, Flow), deployment["entrypoint"]
        assert flow.name == FLOW_NAMES[deployment["entrypoint"]]


def test_prefect_parameters_are_valid_run_configs(prefect_raw, flows_by_entrypoint, monkeypatch):
    """After `prefect deploy` fills in `{{ $VAR }}`s, each `config` is a camflow RunConfig."""
    from prefect.utilities.templating import apply_values

    from flows.config import parse_config

    env = {"CAMFLOW_OUTPUT": "s3://bucket/camflow/runs", "CAMFLOW_DATA_ROOT": "s3://bucket/voc"}
    placeholders = set(re.findall(r"\{\{\s*\$(\w+)\s*\}\}", json.dumps(prefect_raw["deployments"])))
    assert placeholders <= set(env), f"undocumented placeholders {placeholders - set(env)}"
    for deployment in prefect_raw["deployments"]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)  # Prefect fills {{ $VAR }} from os.environ
        filled = apply_values(deployment["parameters"], {}, remove_notset=False)
        assert "{{" not in json.dumps(filled)
        cfg = parse_config(filled["config"], deployment["name"])
        assert cfg.output.startswith("s3://")
        flow = flows_by_entrypoint[deployment["entrypoint"]]
        validated = flow.validate_parameters(filled)  # the flow's defaults added
        assert {key: validated[key] for key in filled} == filled


def test_deployments_submit_to_the_clusters_jobs_api(prefect_raw):
    from cluster.jobs import COMMANDS

    commands = {d["name"]: d["parameters"]["command"] for d in prefect_raw["deployments"]}
    assert commands == {"voc-broadcam-nightly": "run", "voc-broadcam-sweep": "sweep"}
    assert set(commands.values()) <= set(COMMANDS)
    for d in prefect_raw["deployments"]:
        assert re.fullmatch(r"https?://[\w.-]+:8265", d["parameters"]["address"]), d["name"]


def test_prefect_pull_steps_change_into_camflow_home(prefect_raw, tmp_path, monkeypatch):
    """The worker runs the pull steps with its own environment: CAMFLOW_HOME picks the code."""
    from prefect.utilities.importtools import import_object
    from prefect.utilities.templating import apply_values

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAMFLOW_HOME", str(ROOT))
    for step in prefect_raw["pull"]:
        # what prefect.deployments.steps.core.run_step does, minus the API look-ups
        (fqn, inputs), = step.items()
        import_object(fqn)(**apply_values(inputs, os.environ))
    assert Path.cwd() == ROOT
    assert all((ROOT / e.partition(":")[0]).is_file() for e in FLOW_NAMES)


def test_prefect_worker_pool_agrees(ray_cfg, prefect_raw):
    pools = {d["work_pool"]["name"] for d in prefect_raw["deployments"]}
    head = " ".join(ray_cfg["head_start_ray_commands"])
    assert all(f"--pool {pool}" in head for pool in pools)


def test_job_variables_fit_the_process_worker(ray_cfg, prefect_raw):
    # The pool is a process pool (the head's worker says so): its job variables are the
    # process worker's.
    assert "--type process" in " ".join(ray_cfg["head_start_ray_commands"])
    assert any(d["work_pool"].get("job_variables") for d in prefect_raw["deployments"])
    assert job_variables_problems(prefect_raw) == []


# ---------------------------------------------------------------------------------------------
# negative controls


def test_prefect_validator_catches(prefect_raw):
    no_cron = copy.deepcopy(prefect_raw)
    for d in no_cron["deployments"]:
        d["schedules"] = []
    assert prefect_yaml_problems(no_cron)
    bad_cron = copy.deepcopy(prefect_raw)
    bad_cron["deployments"][0]["schedules"] = [{"cron": "0 25 * * *"}]
    assert prefect_yaml_problems(bad_cron)
    assert prefect_yaml_problems(drop(prefect_raw, "deployments.0.entrypoint"))
    assert prefect_yaml_problems({**prefect_raw, "deployments": [{"schedules": [{"cron": "x",
                                                                               "interval": 5}]}]})


@pytest.mark.parametrize("path, typo", [("deployments.0.concurrency_limit", "concurency_limit"),
                                        ("deployments.1.entrypoint", "entry_point"),
                                        ("deployments.0.work_pool.job_variables", "job_vars"),
                                        ("pull", "pulls")])
def test_prefect_validator_catches_an_unknown_key(prefect_raw, path, typo):
    from prefect.cli.deploy._models import PrefectYamlModel

    broken = rename(prefect_raw, path, typo)
    # Prefect's own model takes it, ignoring the key (should that change, the strict copies in
    # prefect_checks.py can go).
    PrefectYamlModel.model_validate(broken)
    problems = prefect_yaml_problems(broken)
    assert len(problems) == 1 and typo in problems[0] and "Extra inputs" in problems[0]


def test_prefect_validator_catches_a_legacy_schedule(prefect_raw):
    both = put(prefect_raw, "deployments.0.schedule", {"cron": "0 3 * * *"})
    assert any("Both 'schedule' and 'schedules'" in p for p in prefect_yaml_problems(both))
    legacy = rename(prefect_raw, "deployments.1.schedules", "schedule")
    assert prefect_yaml_problems(put(legacy, "deployments.1.schedule", {"cron": "0 3 * * *"}))


@pytest.mark.parametrize("key, value, expect", [
    ("envs", {"A": "1"}, "'envs' was unexpected"),
    ("working_directory", "/app", "'working_directory' was unexpected"),
    ("stream_output", "yes", "is not of type 'boolean'"),
    ("env", {"RAY_USAGE_STATS_ENABLED": 0}, "is not valid under any of the given schemas"),
])
def test_job_variables_check_catches(prefect_raw, key, value, expect):
    broken = put(prefect_raw, f"deployments.0.work_pool.job_variables.{key}", value)
    problems = job_variables_problems(broken)
    assert problems and all(expect in p for p in problems), problems


def test_zombie_run_automation():
    automations = load_yaml(PREFECT_AUTOMATIONS)
    assert automation_problems(automations) == []
    (zombie,) = automations["automations"]
    assert zombie["actions"][0]["state"] == "CRASHED"


@pytest.mark.parametrize("path, value, expect", [
    ("trigger.after", ["prefect.flow-run.heartbeats"], "no such event"),
    ("trigger.expect", ["prefect.flow-run.Completed"], "heartbeat"),
    ("trigger.posture", "Reactive", "Proactive"),
    ("trigger.within", 60, "heartbeat"),
    ("actions.0.state", "CRASH", "Input should be"),
])
def test_automation_check_catches(path, value, expect):
    automations = load_yaml(PREFECT_AUTOMATIONS)
    broken = {"automations": [put(automations["automations"][0], path, value)]}
    problems = automation_problems(broken)
    assert problems and any(expect in p for p in problems), problems
