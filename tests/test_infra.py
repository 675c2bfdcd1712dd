"""The scaling-out manifests under infra/ are valid, complete and agree with the code they deploy.

Fast and offline: no Docker, no Kubernetes, no cloud. Each manifest is parsed and checked by a
small validator that returns its problems; the negative tests at the end feed the validators
broken copies, so every check is known to be able to fail.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
RAY_CLUSTER = INFRA / "ray" / "cluster.yaml"
KUBERAY = INFRA / "kuberay" / "raycluster.yaml"
PREFECT_YAML = INFRA / "prefect.yaml"
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
FLOW_NAMES = {"flows/pipeline.py:pipeline": "camflow-pipeline", "flows/pipeline.py:sweep": "camflow-sweep"}


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} must hold a mapping"
    return data


def gpu_count(value: Any) -> float:
    return float(value or 0)


# ---------------------------------------------------------------------------------------------
# validators: each returns a list of problems (empty when the manifest is fine)


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


def kuberay_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append("apiVersion must be ray.io/v1")
    if doc.get("kind") != "RayCluster":
        problems.append("kind must be RayCluster")
    spec = doc.get("spec", {})
    name = doc.get("metadata", {}).get("name")
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
        containers = g.get("template", {}).get("spec", {}).get("containers") or []
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
        secrets = [e.get("secretRef", {}).get("name") for e in ray_container.get("envFrom", [])]
        if not any(secrets):
            problems.append(f"{group}: S3 settings must come from a Secret (envFrom.secretRef)")
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
    gpu_groups = [w for w in workers
                  if gpu_count(w["template"]["spec"]["containers"][0].get("resources", {})
                               .get("limits", {}).get("nvidia.com/gpu")) >= 1]
    if not gpu_groups:
        problems.append("no worker group with nvidia.com/gpu limits")
    for w in workers:
        if not w.get("minReplicas", 0) <= w.get("replicas", 0) <= w.get("maxReplicas", 0):
            problems.append(f"{w.get('groupName')}: needs minReplicas <= replicas <= maxReplicas")
    return problems


def prefect_yaml_problems(raw: dict[str, Any]) -> list[str]:
    """Problems Prefect's own loader (the model `prefect deploy` validates with) or we find."""
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        model = PrefectYamlModel.model_validate(raw)
    except ValidationError as exc:
        return [f"prefect.yaml does not validate: {exc}"]
    problems = []
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


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    ins = dockerfile_instructions(text)
    froms = [i for i, (word, _) in enumerate(ins) if word == "FROM"]
    if len(froms) < 2:
        problems.append("expected a multi-stage build (build + runtime)")
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in ins
            if word == "ARG" and "=" in rest}
    base = args.get("PYTHON_IMAGE", "")
    if not base.startswith("python:3.11-slim"):
        problems.append("base image must be python:3.11-slim")
    makefile_uv = re.search(r"UV_VERSION := (\S+)", (ROOT / "Makefile").read_text()).group(1)
    if args.get("UV_VERSION") != makefile_uv or "uv==${UV_VERSION}" not in text:
        problems.append(f"uv must be installed from PyPI at the Makefile's version {makefile_uv}")
    runs = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "RUN"]
    syncs = [(i, rest) for i, rest in runs if "uv pip sync" in rest]
    if not syncs:
        problems.append("no `uv pip sync`")
    for _, rest in syncs:
        if "--require-hashes" not in rest or RUNTIME_LOCK not in rest:
            problems.append(f"`uv pip sync` must install {RUNTIME_LOCK} with --require-hashes: {rest}")
    installs = [rest for _, rest in runs if "uv pip install" in rest]
    if any("--no-deps" not in rest for rest in installs):
        problems.append("the project must be installed with --no-deps (the lock has its dependencies)")
    copies = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "COPY"]
    lock_copy = [i for i, rest in copies if RUNTIME_LOCK in rest]
    if not lock_copy or not syncs or lock_copy[0] > syncs[0][0]:
        problems.append(f"{RUNTIME_LOCK} must be copied before the first `uv pip sync`")
    source_copy = [i for i, rest in copies if re.search(r"\bcamflow\b", rest) and "--from" not in rest]
    if not source_copy or not syncs or source_copy[0] < syncs[0][0]:
        problems.append("the source must be copied after the dependencies are installed")
    final = ins[froms[-1]:] if froms else ins
    if any(word == "RUN" and "g++" in rest for word, rest in final):
        problems.append("g++ must stay in the build stage")
    if not any(word == "RUN" and "g++" in rest for word, rest in ins):
        problems.append("g++ is needed to build pydensecrf2")
    users = [rest for word, rest in final if word == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the runtime stage must run as a non-root user")
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    if not entry:
        problems.append("no ENTRYPOINT")
    else:
        try:
            argv = json.loads(entry[-1])
        except ValueError:
            argv = None
        if not isinstance(argv, list) or argv[-1] != "camflow":
            problems.append("ENTRYPOINT must be exec form ending in the camflow console script")
    return problems


def copied_sources(text: str) -> list[str]:
    """Paths the Dockerfile copies from the build context."""
    out = []
    for word, rest in dockerfile_instructions(text):
        if word != "COPY" or "--from" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        out.extend(parts[:-1])
    return out


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Last matching pattern wins (Docker's rule), for the simple patterns used here."""
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").rstrip("/")
        if p == "**" or path == p or path.startswith(p + "/"):
            allowed = negate
    return allowed


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def ray_cfg() -> dict[str, Any]:
    return load_yaml(RAY_CLUSTER)


@pytest.fixture(scope="module")
def kuberay_doc() -> dict[str, Any]:
    return load_yaml(KUBERAY)


@pytest.fixture(scope="module")
def prefect_raw() -> dict[str, Any]:
    return load_yaml(PREFECT_YAML)


@pytest.fixture(scope="module")
def compose_doc() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


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


# ---------------------------------------------------------------------------------------------
# tests


def test_every_infra_yaml_parses():
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert {RAY_CLUSTER, KUBERAY, PREFECT_YAML, COMPOSE} <= set(files)
    for path in files:
        load_yaml(path)


def test_ray_cluster_yaml(ray_cfg):
    assert ray_cluster_problems(ray_cfg) == []


def test_ray_cluster_yaml_validates_against_rays_schema(ray_cfg):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(ray_cfg, schema)
    # And Ray's own checks (the schema plus node-type consistency), after its default filling.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(ray_cfg)))


def test_kuberay_raycluster(kuberay_doc):
    assert kuberay_problems(kuberay_doc) == []


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
        assert flow.validate_parameters(filled) == filled


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


def test_compose_stack(compose_doc, env_example):
    assert compose_problems(compose_doc, env_example) == []


def test_compose_camflow_config_is_in_the_image_and_valid(compose_doc):
    from flows.config import load_config

    command = compose_doc["services"]["camflow"]["command"]
    in_image = command[1]
    local = ROOT / Path(in_image).relative_to("/app")
    cfg = load_config(local, {"output": command[command.index("--output") + 1]})
    assert cfg.output.startswith("s3://")
    assert dockerignore_allows(str(local.relative_to(ROOT)), DOCKERIGNORE.read_text().split())


def test_container_commands_parse_as_camflow_invocations(compose_doc):
    """What the compose service and the image's default CMD pass to the camflow entrypoint."""
    from flows import cli

    serve = cli.parser().parse_args(compose_doc["services"]["camflow"]["command"])
    assert serve.func is cli.cmd_serve and serve.output.startswith("s3://")
    cmd = [rest for word, rest in dockerfile_instructions(DOCKERFILE.read_text()) if word == "CMD"]
    with pytest.raises(SystemExit) as exc:  # --help prints usage and exits 0
        cli.parser().parse_args(json.loads(cmd[-1]))
    assert exc.value.code == 0


def test_dockerfile(env_example):
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in copied_sources(text):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert dockerignore_allows(source.rstrip("/"), patterns), f"{source} is dockerignored"
    assert not dockerignore_allows(".venv", patterns)
    assert not dockerignore_allows("infra/.env", patterns)


def test_image_entry_point_is_the_console_script():
    target = PYPROJECT["project"]["scripts"]["camflow"]
    assert target == "flows.cli:main"
    module, _, attr = target.partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert callable(main)
    # What the image runs at build time as its smoke check.
    assert main(["config", str(INFRA / "configs" / "cluster.yaml")]) == 0


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


def test_prefect_worker_pool_agrees(ray_cfg, prefect_raw):
    pools = {d["work_pool"]["name"] for d in prefect_raw["deployments"]}
    head = " ".join(ray_cfg["head_start_ray_commands"])
    assert all(f"--pool {pool}" in head for pool in pools)


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


# ---------------------------------------------------------------------------------------------
# negative controls: the validators reject broken manifests


def _drop(doc: dict[str, Any], dotted: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[leaf]
    return doc


@pytest.mark.parametrize("key", ["head_node_type", "available_node_types.gpu-worker",
                                 "docker.run_options", "provider"])
def test_ray_validator_catches(ray_cfg, key):
    assert ray_cluster_problems(_drop(ray_cfg, key))


def test_validators_catch_a_head_that_takes_work(ray_cfg, kuberay_doc):
    working = copy.deepcopy(ray_cfg)
    working["available_node_types"]["head"]["resources"] = {}
    assert any("head advertises CPUs" in p for p in ray_cluster_problems(working))
    assert any("num-cpus" in p for p in kuberay_problems(
        _drop(kuberay_doc, "spec.headGroupSpec.rayStartParams.num-cpus")))


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


def test_ray_schema_catches_unknown_key(ray_cfg):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ray_cfg, "head_node": {"typo": 1}, "max_worker": 3}, schema)


@pytest.mark.parametrize("key", ["spec.workerGroupSpecs.0.template.spec.containers.0.resources",
                                 "spec.headGroupSpec.rayStartParams",
                                 "spec.workerGroupSpecs.0.template.spec.containers.0.envFrom"])
def test_kuberay_validator_catches(kuberay_doc, key):
    assert kuberay_problems(_drop(kuberay_doc, key))


def test_prefect_validator_catches(prefect_raw):
    no_cron = copy.deepcopy(prefect_raw)
    for d in no_cron["deployments"]:
        d["schedules"] = []
    assert prefect_yaml_problems(no_cron)
    bad_cron = copy.deepcopy(prefect_raw)
    bad_cron["deployments"][0]["schedules"] = [{"cron": "0 25 * * *"}]
    assert prefect_yaml_problems(bad_cron)
    assert prefect_yaml_problems(_drop(prefect_raw, "deployments.0.entrypoint"))
    assert prefect_yaml_problems({**prefect_raw, "deployments": [{"schedules": [{"cron": "x",
                                                                               "interval": 5}]}]})


def test_compose_validator_catches(compose_doc, env_example):
    assert compose_problems(_drop(compose_doc, "services.minio"), env_example)
    leaked = copy.deepcopy(compose_doc)
    leaked["services"]["camflow"]["environment"]["AWS_SECRET_ACCESS_KEY"] = "hunter22"
    assert compose_problems(leaked, env_example)
    assert compose_problems(compose_doc, {})  # .env.example missing variables


def test_dockerfile_validator_catches():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text.replace("--require-hashes", ""))
    assert dockerfile_problems(text.replace("--no-deps", ""))
    assert dockerfile_problems(text.replace('"camflow"]', '"python"]'))
    assert dockerfile_problems(text.replace("USER camflow", "USER root"))
    assert dockerfile_problems(text.replace(f"COPY {RUNTIME_LOCK} ./{RUNTIME_LOCK}", ""))
