"""infra/compose.yaml: the Compose Specification's schema (vendored), and the stack camflow needs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.infra.common import DOCKERIGNORE, ROOT, drop, put, rename
from tests.infra.dockerfile import dockerignore_allows
from tests.infra.validators import compose_problems, compose_schema_problems


def test_compose_stack(compose_doc, env_example):
    assert compose_problems(compose_doc, env_example) == []


def test_compose_file_validates_against_the_compose_spec(compose_doc):
    assert compose_schema_problems(compose_doc) == []


def test_compose_camflow_config_is_in_the_image_and_valid(compose_doc):
    from flows.config import load_config

    command = compose_doc["services"]["camflow"]["command"]
    in_image = command[1]
    local = ROOT / Path(in_image).relative_to("/app")
    cfg = load_config(local, {"output": command[command.index("--output") + 1]})
    assert cfg.output.startswith("s3://")
    assert dockerignore_allows(str(local.relative_to(ROOT)), DOCKERIGNORE.read_text().split())


# ---------------------------------------------------------------------------------------------
# negative controls


def test_compose_validator_catches(compose_doc, env_example):
    assert compose_problems(drop(compose_doc, "services.minio"), env_example)
    leaked = copy.deepcopy(compose_doc)
    leaked["services"]["camflow"]["environment"]["AWS_SECRET_ACCESS_KEY"] = "hunter22"
    assert compose_problems(leaked, env_example)
    assert compose_problems(compose_doc, {})  # .env.example missing variables


def test_compose_schema_catches_a_typod_service_key(compose_doc, env_example):
    typo = rename(compose_doc, "services.postgres.environment", "enviroment")
    assert compose_problems(typo, env_example) == []  # the hand-written checks miss it
    problems = compose_schema_problems(typo)
    assert len(problems) == 1
    assert problems[0].startswith("services.postgres:") and "'enviroment'" in problems[0]


@pytest.mark.parametrize("path, value, where", [
    ("services.camflow.restart", 5, "services.camflow.restart"),
    ("services.minio.healthcheck.intervall", "5s", "services.minio.healthcheck"),
    ("services.camflow.depends_on.minio-init.condition", "service_done",
     "services.camflow.depends_on"),
    ("volume", {"data": None}, "(top level)"),
])
def test_compose_schema_catches(compose_doc, path, value, where):
    problems = compose_schema_problems(put(compose_doc, path, value))
    assert problems and problems[0].startswith(where), problems
