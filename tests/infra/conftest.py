"""The parsed infra manifests, one copy per test module (tests copy before they break one)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.common import (
    COMPOSE,
    ENV_EXAMPLE,
    KUBERAY,
    PREFECT_YAML,
    RAY_CLUSTER,
    RAYJOB,
    SERVICE_ACCOUNT,
    load_yaml,
    read_env_file,
)


@pytest.fixture(scope="module")
def ray_cfg() -> dict[str, Any]:
    return load_yaml(RAY_CLUSTER)


@pytest.fixture(scope="module")
def kuberay_doc() -> dict[str, Any]:
    return load_yaml(KUBERAY)


@pytest.fixture(scope="module")
def rayjob_doc() -> dict[str, Any]:
    return load_yaml(RAYJOB)


@pytest.fixture(scope="module", params=[KUBERAY, RAYJOB], ids=["raycluster", "rayjob"])
def kuberay_manifest(request) -> dict[str, Any]:
    """Each KubeRay manifest: the RayCluster, and the RayJob with the cluster it starts."""
    return load_yaml(request.param)


@pytest.fixture(scope="module")
def service_account_doc() -> dict[str, Any]:
    return load_yaml(SERVICE_ACCOUNT)


@pytest.fixture(scope="module")
def prefect_raw() -> dict[str, Any]:
    return load_yaml(PREFECT_YAML)


@pytest.fixture(scope="module")
def compose_doc() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)
