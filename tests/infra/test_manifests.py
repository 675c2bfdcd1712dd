"""Across infra/: every manifest parses, the run configs fit the clusters, no secrets are committed.

Fast and offline: no Docker, no Kubernetes, no cloud. Each manifest is checked by validators that
return its problems (tests/infra/validators.py, k8s.py, prefect_checks.py, dockerfile.py): the
real schemas and models of the tools that read them (Ray, botocore's EC2 model, KubeRay's CRDs,
Prefect, the Compose Specification) and camflow's own rules. Each test module ends with negative
controls that feed the validators broken copies, so every check is known to be able to fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.infra.common import (
    COMPOSE,
    CONFIGS,
    ENV_EXAMPLE,
    INFRA,
    KUBERAY,
    PREFECT_YAML,
    RAY_CLUSTER,
    RAYJOB,
    ROOT,
    SERVICE_ACCOUNT,
    gpu_count,
    load_yaml,
    read_env_file,
)


def test_every_infra_yaml_parses():
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert {RAY_CLUSTER, KUBERAY, RAYJOB, SERVICE_ACCOUNT, PREFECT_YAML, COMPOSE} <= set(files)
    for path in files:
        load_yaml(path)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_validate(path):
    from flows.config import load_config

    cfg = load_config(path)
    assert cfg.output.startswith("s3://")


def test_cluster_config_fits_the_clusters(ray_cfg, kuberay_doc):
    from flows.config import load_config

    cfg = load_config(INFRA / "configs" / "cluster.yaml")
    assert cfg.cluster.use_gpu is True
    gpu = [t for t in ray_cfg["available_node_types"].values()
           if gpu_count(t.get("resources", {}).get("GPU")) >= 1]
    gpus = sum(t["max_workers"] * t["resources"]["GPU"] for t in gpu)
    assert cfg.cluster.workers * cfg.cluster.gpu_fraction <= gpus
    assert all(cfg.cluster.cpus_per_worker <= t["resources"]["CPU"] for t in gpu)
    group = kuberay_doc["spec"]["workerGroupSpecs"][0]
    assert cfg.cluster.cpus_per_worker <= float(group["rayStartParams"]["num-cpus"])
    assert cfg.cluster.workers * cfg.cluster.gpu_fraction <= group["maxReplicas"]



def test_no_secrets_in_infra():
    key_like = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----")
    for path in INFRA.rglob("*"):
        if path.is_file() and path.name not in (".env", "camflow.env"):
            assert not key_like.search(path.read_text(errors="ignore")), path
    for example in (ENV_EXAMPLE, INFRA / "ray" / "camflow.env.example"):
        for key, value in read_env_file(example).items():
            if re.search(r"secret|password", key, re.I):
                assert "change-me" in value or value.startswith("<"), f"{example}: {key}"


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_filled_in_env_files_are_git_ignored():
    for path in ("infra/.env", "infra/ray/camflow.env"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert result.returncode == 0, f"{path} is not git-ignored"


