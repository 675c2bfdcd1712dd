"""Paths, constants and small helpers shared by the infra checks."""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RAY_CLUSTER = INFRA / "ray" / "cluster.yaml"
KUBERAY = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
SERVICE_ACCOUNT = INFRA / "kuberay" / "serviceaccount.yaml"
PREFECT_YAML = INFRA / "prefect.yaml"
PREFECT_AUTOMATIONS = INFRA / "prefect-automations.yaml"
COMPOSE = INFRA / "compose.yaml"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.dockerignore"
ENV_EXAMPLE = INFRA / ".env.example"
CONFIGS = sorted((INFRA / "configs").glob("*.yaml"))
RUNTIME_LOCK = "locks/runtime.txt"
DEV_LOCK = "locks/dev.txt"

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
IMAGE_SUFFIX = f"camflow:{VERSION}"
# Must match the flows' names in flows/pipeline.py.
FLOW_NAMES = {"flows/submit.py:submit": "camflow-submit"}
# The ServiceAccount (serviceaccount.yaml) every KubeRay pod runs as: its identity reads S3.
SERVICE_ACCOUNT_NAME = "camflow"


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} must hold a mapping"
    return data


def gpu_count(value: Any) -> float:
    return float(value or 0)


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _walk(doc: Any, keys: list[str]) -> Any:
    for key in keys:
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


def drop(doc: dict[str, Any], dotted: str) -> dict[str, Any]:
    """A copy of doc without the item at dotted (list indices as numbers)."""
    doc = copy.deepcopy(doc)
    *parents, leaf = dotted.split(".")
    del _walk(doc, parents)[leaf]
    return doc


def put(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of doc with value at dotted (a mapping key; list indices as numbers on the way)."""
    doc = copy.deepcopy(doc)
    *parents, leaf = dotted.split(".")
    _walk(doc, parents)[leaf] = value
    return doc


def rename(doc: dict[str, Any], dotted: str, new: str) -> dict[str, Any]:
    """A copy of doc whose key at dotted is spelled new instead (a typo'd field)."""
    doc = copy.deepcopy(doc)
    *parents, leaf = dotted.split(".")
    parent = _walk(doc, parents)
    parent[new] = parent.pop(leaf)
    return doc


def ray_cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayCluster, or of the cluster a RayJob starts."""
    spec = doc.get("spec") or {}
    return (spec.get("rayClusterSpec") or {}) if doc.get("kind") == "RayJob" else spec


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A vendored schema of tests/infra/schemas (gzip'd JSON; see the README there)."""
    return json.loads(gzip.decompress((SCHEMAS / name).read_bytes()))


def schema_problems(validator: Any, doc: Any, where: str = "") -> list[str]:
    """A jsonschema validator's errors as readable problems: `path.to.field: message`."""
    out = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        out.append(f"{where}{path}: {error.message}")
    return out


def closed(schema: Any) -> Any:
    """A copy of a JSON schema in which every object with `properties` rejects other keys.

    Where the schema says nothing (no additionalProperties), the consumer decides: Kubernetes
    prunes or, with strict field validation, rejects unknown fields; Prefect's worker ignores
    unknown job variables. Either way a typo'd key is a setting that silently does nothing.
    `x-kubernetes-preserve-unknown-fields: true` keeps an object open, as it does in Kubernetes.
    """
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf",
                     "prefixItems"):
            out[key] = closed(value)
        else:  # data (default, enum, examples) or a keyword without subschemas
            out[key] = value
    if "properties" in out and "additionalProperties" not in out and \
            not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def in_cluster(doc: dict[str, Any], dotted: str) -> str:
    """The dotted path of a RayCluster spec field in doc: under spec, or a RayJob's
    spec.rayClusterSpec."""
    return ("spec.rayClusterSpec." if doc.get("kind") == "RayJob" else "spec.") + dotted
