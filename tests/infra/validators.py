"""Hand-written checks of the infra manifests: what camflow needs of them, beyond any schema.

Each returns a list of readable problems, empty when the manifest is fine.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from tests.infra.common import (
    COMPOSE,
    IMAGE_SUFFIX,
    ROOT,
    SERVICE_ACCOUNT_NAME,
    gpu_count,
    load_schema,
    ray_cluster_spec,
    schema_problems,
)


def ray_cluster_problems(cfg: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        if key not in cfg:
            problems.append(f"missing {key}")
    if problems:
        return problems
    types = cfg["available_node_types"]
    if cfg["head_node_type"] not in types:
        problems.append("head_node_type is not one of available_node_types")
    elif types[cfg["head_node_type"]].get("resources", {}).get("CPU") != 0:
        # Else the head takes work: Ray schedules the zero-CPU decode and commit pools anywhere.
        problems.append("the head advertises CPUs: its resources need CPU: 0")
    if cfg["provider"].get("type") != "aws":
        problems.append("provider.type should be aws")
    gpu_types = {name: t for name, t in types.items()
                 if name != cfg["head_node_type"] and gpu_count(t.get("resources", {}).get("GPU")) >= 1}
    if not gpu_types:
        problems.append("no GPU worker node type (resources.GPU >= 1)")
    for name, t in gpu_types.items():
        if not str(t.get("node_config", {}).get("InstanceType", "")).startswith(("g", "p")):
            problems.append(f"{name}: InstanceType is not a GPU instance family")
        if not 0 <= t.get("min_workers", 0) <= t.get("max_workers", 0):
            problems.append(f"{name}: needs 0 <= min_workers <= max_workers")
    if sum(t.get("min_workers", 0) for t in types.values()) > cfg["max_workers"]:
        problems.append("sum of min_workers exceeds max_workers")
    docker = cfg.get("docker", {})
    if not str(docker.get("image", "")).endswith(IMAGE_SUFFIX):
        problems.append(f"docker.image is not the camflow image ({IMAGE_SUFFIX})")
    # Ray starts containers with `docker run IMAGE bash`; our image's entrypoint is camflow.
    if not any(opt.startswith("--entrypoint") for opt in docker.get("run_options", [])):
        problems.append("docker.run_options must override the image's camflow entrypoint")
    for remote, local in cfg.get("file_mounts", {}).items():
        path = ROOT / local
        if not (path.exists() or path.with_name(path.name + ".example").exists()):
            problems.append(f"file mount {remote}: neither {local} nor {local}.example exists")
    setup = " ".join(cfg.get("setup_commands", []))
    if "camflow.env" not in setup:
        problems.append("setup_commands must export the S3 environment (camflow.env)")
    if not any("ray start --head" in c for c in cfg.get("head_start_ray_commands", [])):
        problems.append("head_start_ray_commands must start the Ray head")
    return problems



@functools.cache
def _run_instances_input():
    import botocore.session

    ec2 = botocore.session.get_session().get_service_model("ec2")
    return ec2.operation_model("RunInstances").input_shape


def ec2_node_config_problems(cfg: dict[str, Any]) -> list[str]:
    """Each node_config as the EC2 RunInstances call Ray makes of it, checked by botocore."""
    from botocore.validate import ParamValidator

    problems = []
    for name, node_type in (cfg.get("available_node_types") or {}).items():
        params = dict(node_type.get("node_config") or {})
        # What Ray's AWS provider (AWSNodeProvider._create_node) does before create_instances:
        # SubnetIds is Ray's own key, resolved to one SubnetId; it adds the instance counts.
        subnets = params.pop("SubnetIds", None)
        if subnets and "NetworkInterfaces" not in params:
            params["SubnetId"] = subnets[0]
        params.update(MinCount=1, MaxCount=1)
        report = ParamValidator().validate(params, _run_instances_input())
        if report.has_errors():
            problems += [f"{name}.node_config: {line}"
                         for line in report.generate_report().splitlines()]
    return problems


def _rayjob_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    if not str(spec.get("entrypoint") or "").strip():
        problems.append("RayJob: no entrypoint")
    if "rayClusterSpec" not in spec:
        problems.append("RayJob: missing rayClusterSpec (its cluster of its own)")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("RayJob: shutdownAfterJobFinishes must be true (the cluster goes with "
                        "its run)")
    ttl = spec.get("ttlSecondsAfterFinished")
    if not (isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0):
        problems.append("RayJob: needs ttlSecondsAfterFinished (seconds to keep the cluster "
                        "after the run)")
    return problems


def kuberay_problems(doc: dict[str, Any]) -> list[str]:
    """A KubeRay RayCluster, or a RayJob with the cluster it starts."""
    problems = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append("apiVersion must be ray.io/v1")
    kind = doc.get("kind")
    if kind not in ("RayCluster", "RayJob"):
        problems.append("kind must be RayCluster or RayJob")
    if kind == "RayJob":
        problems += _rayjob_problems(doc.get("spec") or {})
    spec = ray_cluster_spec(doc)
    meta = doc.get("metadata") or {}
    name = meta.get("name") or str(meta.get("generateName", "")).rstrip("-")
    head = spec.get("headGroupSpec")
    workers = spec.get("workerGroupSpecs") or []
    if not head:
        problems.append("missing headGroupSpec")
    if not workers:
        problems.append("missing workerGroupSpecs")
    groups = ([("head", head)] if head else []) + [(w.get("groupName", "?"), w) for w in workers]
    for group, g in groups:
        params = g.get("rayStartParams")
        if params is None:
            problems.append(f"{group}: missing rayStartParams")
        elif any(not isinstance(v, str) for v in params.values()):
            problems.append(f"{group}: rayStartParams values must be strings")
        pod = g.get("template", {}).get("spec", {})
        # S3 access comes from the pod's identity: serviceaccount.yaml (IRSA or Pod Identity).
        if pod.get("serviceAccountName") != SERVICE_ACCOUNT_NAME:
            problems.append(f"{group}: serviceAccountName must be {SERVICE_ACCOUNT_NAME} (the "
                            "pod identity that reads S3, serviceaccount.yaml)")
        containers = pod.get("containers") or []
        if not containers:
            problems.append(f"{group}: no containers")
            continue
        ray_container = containers[0]
        # tag[@digest]: a pinned digest may follow the tag.
        if not str(ray_container.get("image", "")).split("@", 1)[0].endswith(IMAGE_SUFFIX):
            problems.append(f"{group}: image is not the camflow image ({IMAGE_SUFFIX})")
        if "@sha256:" not in str(ray_container.get("image", "")) and \
                ray_container.get("imagePullPolicy") != "Always":
            problems.append(f"{group}: a mutable tag needs imagePullPolicy: Always (or pin the "
                            "image by digest)")
        # A static-keys Secret is the fallback beside the pod identity: where there is none, a
        # required one keeps the pod from starting.
        for source in ray_container.get("envFrom", []):
            ref = source.get("secretRef")
            if ref is not None and ref.get("optional") is not True:
                problems.append(f"{group}: Secret {ref.get('name')} must be optional: true (the "
                                "pod identity is the default)")
        for env in ray_container.get("env", []):
            if re.search(r"secret|password|key", env["name"], re.I) and "value" in env:
                problems.append(f"{group}: {env['name']} is a literal; use a Secret")
        for probe in ("readinessProbe", "livenessProbe"):
            command = " ".join(ray_container.get(probe, {}).get("exec", {}).get("command", []))
            # KubeRay's default probes check the pod's own Ray; a probe that asks the head
            # restarts every worker when the head is down, and misses a dead local raylet.
            if group != "head" and (f"{name}-head-svc" in command or "--address" in command):
                problems.append(f"{group}: {probe} checks the head, not this pod's Ray")
    if head and (head.get("rayStartParams") or {}).get("num-cpus") != "0":
        problems.append("head: rayStartParams needs num-cpus: \"0\" (the head only coordinates)")
    gpu_groups = [w for w in workers if gpu_count(_ray_container(w).get("resources", {})
                                                  .get("limits", {}).get("nvidia.com/gpu")) >= 1]
    if not gpu_groups:
        problems.append("no worker group with nvidia.com/gpu limits")
    for w in workers:
        if not w.get("minReplicas", 0) <= w.get("replicas", 0) <= w.get("maxReplicas", 0):
            problems.append(f"{w.get('groupName')}: needs minReplicas <= replicas <= maxReplicas")
    return problems


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    """KubeRay's rule: the Ray container is the pod's first container."""
    return (group.get("template", {}).get("spec", {}).get("containers") or [{}])[0]


def compose_problems(doc: dict[str, Any], env_example: dict[str, str]) -> list[str]:
    problems = []
    services = doc.get("services", {})
    for name in ("prefect-server", "postgres", "minio", "minio-init", "camflow"):
        if name not in services:
            problems.append(f"missing service {name}")
    if problems:
        return problems
    import prefect

    server = services["prefect-server"]
    if server.get("image") != f"prefecthq/prefect:{prefect.__version__}-python3.11":
        problems.append(f"prefect-server image is not prefect {prefect.__version__}")
    if "server start" not in " ".join(server.get("command", [])) or "0.0.0.0" not in server["command"]:
        problems.append("prefect-server must run `prefect server start --host 0.0.0.0`")
    db_url = server.get("environment", {}).get("PREFECT_API_DATABASE_CONNECTION_URL", "")
    if not db_url.startswith("postgresql+asyncpg://") or "@postgres:" not in db_url:
        problems.append("Prefect's database must be the postgres service (postgresql+asyncpg)")
    if "--console-address" not in services["minio"].get("command", []):
        problems.append("minio must serve its console")
    if "mc mb" not in " ".join(services["minio-init"].get("command", [])):
        problems.append("minio-init must create the bucket")
    camflow = services["camflow"]
    build = camflow.get("build", {})
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    if not (context / build.get("dockerfile", "Dockerfile")).is_file():
        problems.append("camflow: build.dockerfile does not exist in build.context")
    if camflow.get("command", [None])[0] != "serve":
        problems.append("camflow must run `camflow serve`")
    env = camflow.get("environment", {})
    if not str(env.get("PREFECT_API_URL", "")).startswith("http://prefect-server:4200/api"):
        problems.append("camflow: PREFECT_API_URL must point at prefect-server")
    if not str(env.get("CAMFLOW_S3_ENDPOINT", "")).startswith("http://minio:9000"):
        problems.append("camflow: CAMFLOW_S3_ENDPOINT must point at minio")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if key not in env:
            problems.append(f"camflow: {key} missing")
    # No literal secrets: every secret-looking setting is interpolated from infra/.env.
    for sname, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"secret|password|_key", key, re.I) and not str(value).startswith("${"):
                problems.append(f"{sname}: {key} is a literal, not ${{...}} from .env")
    # Compose's own ${VAR} interpolations ($${VAR} is the container shell's) are all documented.
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", json.dumps(doc)))
    missing = sorted(v for v in used if v not in env_example)
    if missing:
        problems.append(f"variables not documented in infra/.env.example: {missing}")
    return problems




def compose_schema_problems(doc: dict[str, Any]) -> list[str]:
    """The compose file against the Compose Specification's JSON schema (what docker compose
    validates with), vendored in tests/infra/schemas."""
    import jsonschema

    schema = load_schema("compose-spec.json.gz")
    return schema_problems(jsonschema.validators.validator_for(schema)(schema), doc)
