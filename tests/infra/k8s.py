"""The Kubernetes manifests read the way the API server and KubeRay's Ray autoscaler read them.

- `crd_problems`: a RayCluster or RayJob against KubeRay's own CRD schema (vendored in
  tests/infra/schemas), in the API server's dialect of JSON Schema: unknown fields are errors
  (strict field validation), `x-kubernetes-int-or-string`, `nullable`, list types.
- `service_account_problems`: the core v1 ServiceAccount, against a minimal schema of it.
- `autoscaler_problems`: the cluster as Ray's autoscaler derives it from the custom resource
  (Ray's own conversion), checked with Ray's `validate_config` and against the pods it describes.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema

from tests.infra.common import (
    closed,
    gpu_count,
    load_schema,
    ray_cluster_spec,
    schema_problems,
)

CRD_SCHEMAS = {"RayCluster": "raycluster.v1.json.gz", "RayJob": "rayjob.v1.json.gz"}
# The writable ObjectMeta fields a manifest may set (the API server fills in the rest).
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string", "maxLength": 248},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_SUBDOMAIN},
        "labels": {"type": "object", "additionalProperties": {
            "type": "string", "maxLength": 63,
            "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}
_REFERENCE = {"type": "object", "properties": {
    key: {"type": "string"}
    for key in ("apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion", "uid")}}
SERVICE_ACCOUNT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"enum": ["v1"]},
        "kind": {"enum": ["ServiceAccount"]},
        "metadata": {**OBJECT_META, "required": ["name"]},  # pods name it: no generateName
        "automountServiceAccountToken": {"type": "boolean"},
        "imagePullSecrets": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"}}}},
        "secrets": {"type": "array", "items": _REFERENCE},
    },
}
# The annotations EKS's pod identity webhook reads from a service account (IRSA).
EKS_ANNOTATIONS = {"role-arn", "audience", "sts-regional-endpoints", "token-expiration"}
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}|<[a-z-]+>):role/[\w+=,.@/<>-]+$")


# ---------------------------------------------------------------------------------------------
# the API server's dialect of JSON Schema (structural schemas, OpenAPI v3)


def _int_or_string(validator, value, instance, schema):
    if value and not (isinstance(instance, str) or
                      (isinstance(instance, int) and not isinstance(instance, bool))):
        yield jsonschema.ValidationError(f"{instance!r} is neither an integer nor a string")


def _list_type(validator, value, instance, schema):
    """listType set: no duplicates; listType map: no two items with the same keys."""
    if not isinstance(instance, list) or value not in ("set", "map"):
        return
    if value == "set":
        keys = [json.dumps(item, sort_keys=True) for item in instance]
    else:
        names = schema.get("x-kubernetes-list-map-keys", [])
        defaults = {n: schema.get("items", {}).get("properties", {}).get(n, {}).get("default")
                    for n in names}
        keys = [json.dumps([item.get(n, defaults[n]) if isinstance(item, dict) else item
                            for n in names]) for item in instance]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        yield jsonschema.ValidationError(f"duplicate entries in a listType={value} list: "
                                         f"{', '.join(duplicates)}")


KubernetesValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "x-kubernetes-int-or-string": _int_or_string,
    "x-kubernetes-list-type": _list_type,
})


def kubernetes_schema(schema: Any) -> Any:
    """A structural schema as plain JSON Schema: closed objects, `nullable` as a null type."""
    def nullable(node: Any) -> Any:
        if isinstance(node, list):
            return [nullable(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: (v if k in ("default", "enum", "example") else
                   {n: nullable(s) for n, s in v.items()} if k == "properties" else nullable(v))
               for k, v in node.items()}
        if out.get("nullable") and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out

    return closed(nullable(schema))


@functools.cache
def _crd_validator(kind: str) -> Any:
    schema = kubernetes_schema(load_schema(CRD_SCHEMAS[kind]))
    # The CRD leaves these to the API server, which checks them for every kind.
    schema["properties"].update(apiVersion={"enum": ["ray.io/v1"]}, kind={"enum": [kind]},
                                metadata=closed(OBJECT_META))
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return KubernetesValidator(schema)


def crd_problems(doc: dict[str, Any]) -> list[str]:
    """A KubeRay custom resource as `kubectl apply` (strict field validation) would take it."""
    kind = doc.get("kind")
    if kind not in CRD_SCHEMAS:
        return [f"kind {kind!r} is not one of {sorted(CRD_SCHEMAS)}"]
    return schema_problems(_crd_validator(kind), doc, f"{kind} ")


def service_account_problems(doc: dict[str, Any]) -> list[str]:
    problems = schema_problems(KubernetesValidator(closed(SERVICE_ACCOUNT)), doc, "ServiceAccount ")
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    for key, value in annotations.items():
        prefix, _, name = key.partition("/")
        if prefix == "eks.amazonaws.com" and name not in EKS_ANNOTATIONS:
            problems.append(f"ServiceAccount: EKS reads no annotation {key!r} (one of "
                            f"{sorted(EKS_ANNOTATIONS)})")
        if key == "eks.amazonaws.com/role-arn" and not _ROLE_ARN.match(str(value)):
            problems.append(f"ServiceAccount: {value!r} is not an IAM role ARN")
    return problems


# ---------------------------------------------------------------------------------------------
# the cluster as Ray's autoscaler sees it


def autoscaler_config(doc: dict[str, Any]) -> dict[str, Any]:
    """What Ray's autoscaler derives from the RayCluster (a RayJob's: its rayClusterSpec)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    meta = doc.get("metadata") or {}
    cr = {"metadata": {"name": meta.get("name") or str(meta.get("generateName", "")).rstrip("-"),
                       "namespace": meta.get("namespace", "default")},
          "spec": ray_cluster_spec(doc)}
    return _derive_autoscaling_config_from_ray_cr(cr)


def _quantity(value: Any) -> float:
    from ray.autoscaler._private.kuberay.utils import parse_quantity

    return float(parse_quantity(str(value)))


def autoscaler_problems(doc: dict[str, Any]) -> list[str]:
    from ray.autoscaler._private.util import validate_config

    try:
        cfg = autoscaler_config(doc)
        validate_config(cfg)
    except Exception as exc:  # a KeyError, ValueError or ValidationError from Ray's reading
        return [f"Ray's autoscaler cannot read the cluster: {type(exc).__name__}: {exc}"]
    problems = []
    types = cfg["available_node_types"]
    head_cpus = types[cfg["head_node_type"]]["resources"].get("CPU")
    if head_cpus != 0:
        problems.append(f"head: Ray advertises CPU: {head_cpus} on the head (it only "
                        "coordinates: rayStartParams num-cpus: \"0\")")
    for group in ray_cluster_spec(doc).get("workerGroupSpecs") or []:
        name = group["groupName"]
        advertised = types[name]["resources"]
        container = (group["template"]["spec"].get("containers") or [{}])[0]
        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        gpus = gpu_count(limits.get("nvidia.com/gpu"))
        if gpu_count(advertised.get("GPU")) != gpus:
            problems.append(f"{name}: Ray advertises GPU: {advertised.get('GPU', 0)} but the "
                            f"container's nvidia.com/gpu limit is {gpus:g} (the pod may land on a "
                            "node without that GPU)")
        if "nvidia.com/gpu" in requests and gpu_count(requests["nvidia.com/gpu"]) != gpus:
            problems.append(f"{name}: nvidia.com/gpu requests must equal its limits (an extended "
                            "resource is never overcommitted)")
        if "cpu" in limits and advertised["CPU"] > _quantity(limits["cpu"]):
            problems.append(f"{name}: Ray advertises CPU: {advertised['CPU']}, more than the "
                            f"container's limit {limits['cpu']}")
    return problems
