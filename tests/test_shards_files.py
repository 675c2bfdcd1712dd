"""Small commit markers: bulky bytes (metric states) live in binary files beside the data."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from camflow.shards import ShardStore


def _table(n: int) -> pa.Table:
    return pa.table({"image_id": [f"im{i:04d}" for i in range(n)], "v": list(range(n))})


def test_a_marker_names_its_files_in_under_2_kb_and_the_files_read_back_in_batches(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    blobs = {}
    for i in range(5):
        shard = f"shard-{i:05d}"
        blobs[shard] = bytes([i]) * 300_000  # the size of a 21-class shard's metric states
        record = store.commit("decode", shard, {"rejects": _table(i)},
                              files={"metrics": blobs[shard]})
        marker = store.fs.cat(store.marker_path("decode", shard))
        assert len(marker) < 2048
        entry = json.loads(marker)["files"]["metrics"]
        assert entry == record.files["metrics"]
        assert entry["sha256"] == hashlib.sha256(blobs[shard]).hexdigest()
    got = dict(store.read_files("metrics", "decode", sorted(blobs), batch=2))
    assert got == blobs
    assert store.committed("decode") == set(blobs)


def test_a_missing_file_of_a_committed_shard_is_an_error_naming_it(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    store.commit("decode", "shard-00000", {}, files={"metrics": b"x"})
    store.fs.rm(store.file_path("metrics", "decode", "shard-00000"))
    with pytest.raises(FileNotFoundError, match="shard-00000"):
        list(store.read_files("metrics", "decode", ["shard-00000"]))


def test_a_name_used_for_a_table_and_a_file_is_refused(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    with pytest.raises(ValueError, match="both a table and a file"):
        store.commit("cam", "shard-00000", {"seeds": _table(1)}, files={"seeds": b"x"})
