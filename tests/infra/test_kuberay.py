"""infra/kuberay: the RayCluster and the RayJob, as camflow needs them and as Ray's autoscaler
reads them (Ray's own conversion of the custom resource into its autoscaling config)."""

from __future__ import annotations

import copy

import pytest

from tests.infra.common import VERSION, drop, in_cluster, put, ray_cluster_spec
from tests.infra.k8s import autoscaler_config, autoscaler_problems
from tests.infra.validators import kuberay_problems

WORKER = "workerGroupSpecs.0.template.spec"
WORKER_CONTAINER = f"{WORKER}.containers.0"


def test_kuberay_raycluster(kuberay_doc):
    assert kuberay_problems(kuberay_doc) == []


def test_kuberay_rayjob(rayjob_doc):
    assert rayjob_doc["kind"] == "RayJob"
    assert kuberay_problems(rayjob_doc) == []


def test_rayjob_starts_the_same_cluster_as_raycluster(kuberay_doc, rayjob_doc):
    """rayjob.yaml's cluster is raycluster.yaml's: the two must not drift apart."""
    assert rayjob_doc["spec"]["rayClusterSpec"] == kuberay_doc["spec"]


def test_ray_autoscaler_reads_the_cluster(kuberay_manifest):
    """Ray's KubeRay conversion, then Ray's validate_config, accept it; the head takes no work
    and each GPU group advertises exactly the GPUs its pods get."""
    assert autoscaler_problems(kuberay_manifest) == []
    cfg = autoscaler_config(kuberay_manifest)
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["CPU"] == 0
    for group in ray_cluster_spec(kuberay_manifest)["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert types[group["groupName"]]["resources"].get("GPU", 0) == limits["nvidia.com/gpu"]
        assert types[group["groupName"]]["max_workers"] == group["maxReplicas"]


# ---------------------------------------------------------------------------------------------
# negative controls


def test_kuberay_validator_catches_a_stale_image_policy(kuberay_doc):
    stale = copy.deepcopy(kuberay_doc)
    container = stale["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    assert any("imagePullPolicy" in p for p in kuberay_problems(stale))
    container["image"] = f"registry.example/camflow:{VERSION}@sha256:{'0' * 64}"  # pinned
    assert not kuberay_problems(stale)


def test_kuberay_validator_catches_a_worker_probe_that_asks_the_head(kuberay_doc):
    probed = copy.deepcopy(kuberay_doc)
    probed["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["bash", "-c", "ray health-check --address camflow-head-svc:6379"]}}
    assert any("checks the head" in p for p in kuberay_problems(probed))


@pytest.mark.parametrize("key", [f"{WORKER_CONTAINER}.resources",
                                 "headGroupSpec.rayStartParams",
                                 f"{WORKER}.serviceAccountName",
                                 "headGroupSpec.template.spec.serviceAccountName"])
def test_kuberay_validator_catches(kuberay_manifest, key):
    assert kuberay_problems(drop(kuberay_manifest, in_cluster(kuberay_manifest, key)))


def test_kuberay_validator_takes_the_secret_only_as_optional(kuberay_manifest):
    ref = in_cluster(kuberay_manifest, f"{WORKER_CONTAINER}.envFrom.0.secretRef.optional")
    assert any("optional" in p for p in kuberay_problems(drop(kuberay_manifest, ref)))
    # No Secret at all is fine: the pod identity (serviceAccountName) reads S3.
    env_from = in_cluster(kuberay_manifest, f"{WORKER_CONTAINER}.envFrom")
    assert kuberay_problems(drop(kuberay_manifest, env_from)) == []


@pytest.mark.parametrize("change", [("drop", "shutdownAfterJobFinishes"),
                                    ("put", "shutdownAfterJobFinishes", False),
                                    ("drop", "ttlSecondsAfterFinished"),
                                    ("put", "ttlSecondsAfterFinished", "1h"),
                                    ("drop", "rayClusterSpec")])
def test_kuberay_validator_catches_a_rayjob_that_leaves_its_cluster(rayjob_doc, change):
    op, key, *value = change
    broken = drop(rayjob_doc, f"spec.{key}") if op == "drop" else \
        put(rayjob_doc, f"spec.{key}", *value)
    assert any("RayJob" in p for p in kuberay_problems(broken))


def test_kuberay_validator_checks_the_kind(kuberay_doc):
    assert any("kind" in p for p in kuberay_problems({**kuberay_doc, "kind": "RayService"}))


def test_autoscaler_check_catches_a_head_that_takes_work(kuberay_manifest):
    broken = drop(kuberay_manifest, in_cluster(kuberay_manifest, "headGroupSpec.rayStartParams.num-cpus"))
    problems = autoscaler_problems(broken)
    # Ray then reads the head container's CPU limit (4) as the head's CPUs.
    assert len(problems) == 1 and "CPU: 4 on the head" in problems[0]


def test_autoscaler_check_catches_a_gpu_group_whose_pods_get_no_gpu(kuberay_manifest):
    """Without the nvidia.com/gpu request the pod lands on any node; Ray still advertises the
    GPU of rayStartParams' num-gpus, and the GPU actors fail there."""
    broken = copy.deepcopy(kuberay_manifest)
    container = ray_cluster_spec(broken)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    for kind in ("limits", "requests"):
        del container["resources"][kind]["nvidia.com/gpu"]
    problems = autoscaler_problems(broken)
    assert len(problems) == 1 and "Ray advertises GPU: 1" in problems[0]
    assert "limit is 0" in problems[0]


def test_autoscaler_check_catches_more_gpus_than_the_pod_has(kuberay_manifest):
    params = in_cluster(kuberay_manifest, "workerGroupSpecs.0.rayStartParams.num-gpus")
    assert any("GPU: 2" in p for p in autoscaler_problems(put(kuberay_manifest, params, "2")))
    requests = in_cluster(kuberay_manifest, f"{WORKER_CONTAINER}.resources.requests")
    overcommitted = put(kuberay_manifest, requests, {"cpu": "1", "nvidia.com/gpu": 0})
    assert any("requests must equal" in p for p in autoscaler_problems(overcommitted))
    cpus = in_cluster(kuberay_manifest, "workerGroupSpecs.0.rayStartParams.num-cpus")
    assert any("CPU: 8" in p for p in autoscaler_problems(put(kuberay_manifest, cpus, "8")))


def test_autoscaler_check_reports_what_ray_cannot_read(kuberay_manifest):
    broken = drop(kuberay_manifest, in_cluster(kuberay_manifest, "workerGroupSpecs.0.maxReplicas"))
    assert any("cannot read" in p for p in autoscaler_problems(broken))
