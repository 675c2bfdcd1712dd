"""infra/docker: the Dockerfile, its .dockerignore, and the camflow entry point the image runs."""

from __future__ import annotations

import importlib
import json

import pytest

from tests.infra.common import DOCKERFILE, DOCKERIGNORE, INFRA, PYPROJECT, ROOT, RUNTIME_LOCK
from tests.infra.dockerfile import (
    copied_sources,
    dockerfile_instructions,
    dockerfile_problems,
    dockerignore_allows,
)


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


# ---------------------------------------------------------------------------------------------
# negative controls


def test_dockerfile_validator_catches():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text.replace("--require-hashes", ""))
    assert dockerfile_problems(text.replace("--no-deps", ""))
    assert dockerfile_problems(text.replace('"camflow"]', '"python"]'))
    assert dockerfile_problems(text.replace("USER camflow", "USER root"))
    assert dockerfile_problems(text.replace(f"COPY {RUNTIME_LOCK} ./{RUNTIME_LOCK}", ""))
