"""infra/ray/cluster.yaml's shell commands, run here with fake ``nvidia-smi``, ``aws`` and
``docker`` on the PATH: the GPU workers' driver check and the ECR login before the image pull."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest


def _fake(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def _run(command: str, bin_dir: Path) -> subprocess.CompletedProcess:
    # Only the fakes and the basic tools: a real nvidia-smi or aws here must not answer.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir)}
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("version, ok", [("580.65.06", True), ("590.1", True),
                                         ("575.57.08", False), ("", False), (None, False)])
def test_gpu_workers_refuse_an_old_driver(ray_cfg, tmp_path, version, ok):
    (check,) = ray_cfg["worker_setup_commands"]
    if version is not None:
        _fake(tmp_path, "nvidia-smi", f"echo '{version}'")
    done = _run(check, tmp_path)
    assert (done.returncode == 0) == ok, done
    if not ok:
        assert "older than 580" in done.stdout


def _ecr_login(ray_cfg) -> str:
    (login,) = ray_cfg["initialization_commands"]
    return login


def test_ecr_login_names_the_images_registry(ray_cfg):
    registry = ray_cfg["docker"]["image"].rsplit("/", 1)[0]
    assert f"REGISTRY='{registry}'" in _ecr_login(ray_cfg)


@pytest.mark.parametrize("registry, logged_in", [
    ("123456789012.dkr.ecr.eu-central-1.amazonaws.com", True),
    ("ghcr.io/acme", False), ("<registry>", False)])
def test_ecr_login_before_the_pull(ray_cfg, tmp_path, registry, logged_in):
    calls = tmp_path / "calls"
    _fake(tmp_path, "aws", f'echo "aws $*" >> {calls}; echo secret-password')
    _fake(tmp_path, "docker", f'echo "docker $* $(cat)" >> {calls}')
    command = _ecr_login(ray_cfg).replace("REGISTRY='<registry>'", f"REGISTRY='{registry}'")
    done = _run(command, tmp_path)
    assert done.returncode == 0, done
    made = calls.read_text().splitlines() if calls.exists() else []
    if logged_in:
        assert made == ["aws ecr get-login-password --region eu-central-1",
                        f"docker login --username AWS --password-stdin {registry} secret-password"]
    else:
        assert made == []


def test_one_ami_for_every_node(ray_cfg):
    images = {t["node_config"]["ImageId"] for t in ray_cfg["available_node_types"].values()}
    assert len(images) == 1, images
    text = (Path(__file__).resolve().parents[2] / "infra/ray/cluster.yaml").read_text()
    # Written once (the workers alias it), so pinning it is one edit.
    assert len(re.findall(r"ImageId: (?:&\w+ )?(?:resolve:ssm:|ami-)", text)) == 1
