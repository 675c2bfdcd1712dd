from __future__ import annotations

import pyarrow as pa
import pytest

from camflow import storage


def _table() -> pa.Table:
    return pa.table({"image_id": ["a", "b"], "score": pa.array([0.5, 1.5], pa.float32())})


def test_local_round_trip_creates_folders_and_leaves_no_temporaries(tmp_path):
    uri = str(tmp_path / "deep" / "dir" / "t.parquet")
    storage.write_table(_table(), uri)
    assert storage.read_table(uri).equals(_table())
    assert [p.name for p in (tmp_path / "deep" / "dir").iterdir()] == ["t.parquet"]


def test_file_scheme_and_bytes(tmp_path):
    uri = f"file://{tmp_path}/x/blob.bin"
    storage.write_bytes(b"abc", uri)
    with storage.open_uri(uri) as f:
        assert f.read() == b"abc"
    assert storage.exists(uri)


def test_missing_table_names_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        storage.read_table(str(tmp_path / "nothing.parquet"))


def test_s3_round_trip_on_moto(s3_bucket):
    uri = f"s3://{s3_bucket}/runs/r1/t.parquet"
    storage.write_table(_table(), uri)
    assert storage.read_table(uri).equals(_table())
    fs, path = storage.resolve(f"s3://{s3_bucket}/runs/r1")
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(path, refresh=True)] == ["t.parquet"]


def test_endpoint_comes_from_env():
    opts = storage.s3_options_from_env({"CAMFLOW_S3_ENDPOINT": "http://127.0.0.1:9000"})
    assert opts["endpoint_url"] == "http://127.0.0.1:9000"
    assert storage.s3_options_from_env({}) == {}


def test_redact_masks_credentials():
    assert "hunter2" not in storage.redact("s3://user:hunter2@host/bucket")
    text = storage.redact({"key": "AKIA", "secret": "s", "endpoint_url": "http://h"})
    assert "AKIA" not in text and "http://h" in text
