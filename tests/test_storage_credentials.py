"""Temporary credentials reach the workers (issue 17).

SSO, STS and assumed-role credentials are three values: key, secret and session token. A server
that checks them (moto with IAM authentication on: after the setup requests, every request must be
signed by a known key, and an assumed role's key must come with its token) refuses a request
signed without the token. The credentials are set only in the driver's environment; the Ray
worker that reads and writes gets them with the storage options the driver resolves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from camflow import storage

# Requests moto serves before it checks credentials: create role, put its policy, create the
# bucket, assume the role. Every later one is authenticated and authorised.
SETUP_REQUESTS = 4


@pytest.fixture()
def checking_s3(tmp_path):
    """A moto server of its own that enforces IAM authentication once set up; yields the
    endpoint, the bucket and an assumed role's temporary credentials."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    exe = str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the health check is not an AWS action: it does not count
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.2)
        setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam, sts, s3 = (boto3.client(name, **setup) for name in ("iam", "sts", "s3"))
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action":
                 "sts:AssumeRole", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
        role = iam.create_role(RoleName="camflow-worker", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName="camflow-worker", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        s3.create_bucket(Bucket="checked")
        creds = sts.assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="driver")["Credentials"]
        assert creds["AccessKeyId"].startswith("ASIA")  # temporary: needs its session token
        yield {"endpoint": endpoint, "bucket": "checked", "key": creds["AccessKeyId"],
               "secret": creds["SecretAccessKey"], "token": creds["SessionToken"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _write_then_read(uri: str, options: dict) -> bytes:
    """Runs in a Ray worker, whose environment has none of the driver's credentials."""
    import os

    from camflow import storage

    assert "AWS_SESSION_TOKEN" not in os.environ
    storage.write_bytes(b"written by a worker", uri, options)
    with storage.open_uri(uri, "rb", options) as f:
        return f.read()


@pytest.mark.slow
def test_a_worker_uses_temporary_credentials_set_only_in_the_driver(ray_session, checking_s3,
                                                                    monkeypatch):
    uri = f"s3://{checking_s3['bucket']}/runs/a/probe.bin"
    env = {"CAMFLOW_S3_ENDPOINT": checking_s3["endpoint"], "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": checking_s3["key"],
           "AWS_SECRET_ACCESS_KEY": checking_s3["secret"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    task = ray_session.remote(_write_then_read).options(max_retries=0)

    # Without the token the server refuses the worker: the check has teeth.
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with pytest.raises(Exception, match="InvalidAccessKeyId|InvalidToken|InvalidClientTokenId|AccessDenied"):
        ray_session.get(task.remote(uri, storage.options_for(uri)))

    monkeypatch.setenv("AWS_SESSION_TOKEN", checking_s3["token"])
    options = storage.options_for(uri)
    assert options["token"] == checking_s3["token"]
    assert checking_s3["token"] not in storage.redact(options)
    assert ray_session.get(task.remote(uri, options)) == b"written by a worker"
