"""infra/kuberay against KubeRay's CRD schemas (vendored in tests/infra/schemas), read the way
the API server reads them with strict field validation: an unknown field is an error."""

from __future__ import annotations

import pytest

from tests.infra.common import (
    SERVICE_ACCOUNT_NAME,
    in_cluster,
    load_schema,
    put,
    ray_cluster_spec,
    rename,
)
from tests.infra.k8s import (
    CRD_SCHEMAS,
    KubernetesValidator,
    crd_problems,
    kubernetes_schema,
    service_account_problems,
)
from tests.infra.validators import kuberay_problems

POD = "headGroupSpec.template.spec"


@pytest.mark.parametrize("kind", sorted(CRD_SCHEMAS))
def test_vendored_crd_schemas_are_kuberays_v1(kind):
    schema = load_schema(CRD_SCHEMAS[kind])
    spec = schema["properties"]["spec"]["properties"]
    cluster = spec["rayClusterSpec"]["properties"] if kind == "RayJob" else spec
    assert {"headGroupSpec", "workerGroupSpecs", "rayVersion"} <= set(cluster)


def test_kuberay_manifests_validate_against_the_crds(kuberay_manifest):
    assert crd_problems(kuberay_manifest) == []


def test_service_account(service_account_doc, kuberay_manifest):
    assert service_account_problems(service_account_doc) == []
    # The account every pod runs as is this one.
    spec = ray_cluster_spec(kuberay_manifest)
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert {g["template"]["spec"]["serviceAccountName"] for g in groups} == \
        {service_account_doc["metadata"]["name"]} == {SERVICE_ACCOUNT_NAME}


# ---------------------------------------------------------------------------------------------
# negative controls


def test_crd_check_catches_a_typod_field_in_the_pod_template(kuberay_manifest):
    container = in_cluster(kuberay_manifest, "workerGroupSpecs.0.template.spec.containers.0")
    typo = rename(kuberay_manifest, f"{container}.imagePullPolicy", "imagePullPolcy")
    problems = crd_problems(typo)
    assert len(problems) == 1 and "'imagePullPolcy' was unexpected" in problems[0]
    # The hand-written check sees a missing policy, not the typo.
    assert "imagePullPolcy" not in " ".join(kuberay_problems(typo))


def test_crd_check_catches_a_typod_rayjob_field(rayjob_doc):
    typo = rename(rayjob_doc, "spec.shutdownAfterJobFinishes", "shutdownAfterJobFinish")
    problems = crd_problems(typo)
    assert len(problems) == 1 and "'shutdownAfterJobFinish' was unexpected" in problems[0]


@pytest.mark.parametrize("path, value, expect", [
    ("workerGroupSpecs.0.replicas", "1", "is not of type 'integer'"),
    ("workerGroupSpecs.0.rayStartParams.num-gpus", 1, "is not of type 'string'"),
    (f"{POD}.containers.0.resources.limits.cpu", True, "neither an integer nor a string"),
    (f"{POD}.containers.0.env", [{"value": "0"}], "'name' is a required property"),
    (f"{POD}.containers.0.ports", [{"containerPort": 6379}, {"containerPort": 6379}], "duplicate"),
    (f"{POD}.serviceAccount", {"name": "camflow"}, "is not of type 'string'"),
    ("enableInTreeAutoscaling", "true", "is not of type 'boolean'"),
    ("headGroupSpec.template.metadata.labels.app", True, "is not of type 'string'"),
])
def test_crd_check_catches(kuberay_manifest, path, value, expect):
    problems = crd_problems(put(kuberay_manifest, in_cluster(kuberay_manifest, path), value))
    assert any(expect in p for p in problems), problems


def test_crd_check_catches_bad_metadata_and_kind(kuberay_doc):
    assert any("Camflow" in p for p in crd_problems(put(kuberay_doc, "metadata.name", "Camflow")))
    assert any("nmae" in p for p in crd_problems(rename(kuberay_doc, "metadata.name", "nmae")))
    assert crd_problems({**kuberay_doc, "apiVersion": "ray.io/v1alpha1"})
    assert crd_problems({**kuberay_doc, "kind": "RayService"})


def test_kubernetes_dialect():
    """int-or-string, nullable, and closed objects (unless preserve-unknown-fields)."""
    schema = kubernetes_schema({"type": "object", "properties": {
        "port": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                 "x-kubernetes-int-or-string": True},
        "when": {"type": "string", "nullable": True},
        "open": {"type": "object", "properties": {"a": {"type": "string"}},
                 "x-kubernetes-preserve-unknown-fields": True},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
    }})
    validator = KubernetesValidator(schema)
    assert validator.is_valid({"port": 80, "when": None, "open": {"b": 1}, "tags": ["x", "y"]})
    assert validator.is_valid({"port": "http"})
    for bad in ({"port": 1.5}, {"port": False}, {"when": 3}, {"other": 1}, {"tags": ["x", "x"]}):
        assert not validator.is_valid(bad), bad


def test_service_account_check_catches(service_account_doc):
    assert service_account_problems(rename(service_account_doc, "metadata.annotations",
                                           "anotations"))
    assert service_account_problems({**service_account_doc, "kind": "ServiceAcount"})
    assert service_account_problems({**service_account_doc, "automountServiceAccountToken": "no"})
    assert service_account_problems(put(service_account_doc, "metadata.name", "Camflow_S3"))
    arn = "metadata.annotations.eks.amazonaws.com/role-arn"
    meta = service_account_doc["metadata"]
    typo = put(service_account_doc, "metadata.annotations",
               {"eks.amazonaws.com/rolearn": meta["annotations"][arn.split(".", 2)[2]]})
    assert any("rolearn" in p for p in service_account_problems(typo))
    bad_arn = put(service_account_doc, "metadata.annotations",
                  {"eks.amazonaws.com/role-arn": "camflow-s3"})
    assert any("IAM role ARN" in p for p in service_account_problems(bad_arn))
