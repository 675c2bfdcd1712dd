from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from camflow.shards import RunInUseError, ShardStore, table_digest, with_retries


def _rows(shard: int, n: int = 3) -> pa.Table:
    return pa.table({
        "image_id": [f"img{shard}_{i}" for i in range(n)],
        "class_id": pa.array([i % 2 for i in range(n)], pa.int16()),
    })


def _write(store: ShardStore, shards: range, method: str = "cam") -> None:
    for s in shards:
        store.commit(method, f"shard-{s:05d}", {"boxes": _rows(s), "seeds": _rows(s, 1)})


def test_commit_then_read_only_committed_rows(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(3))
    assert store.committed("cam") == {"shard-00000", "shard-00001", "shard-00002"}
    boxes = store.read("boxes")
    assert boxes.num_rows == 9 and set(boxes["method"].to_pylist()) == {"cam"}
    assert store.read("seeds", "cam").num_rows == 3


def test_uncommitted_files_stay_invisible_and_a_redo_does_not_double(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(2))
    # A crash after the data file moved into place but before the marker was written:
    crashed = store.data_path("boxes", "cam", "shard-00002")
    store.fs.pipe_file(crashed, b"half written garbage")
    assert store.read("boxes").num_rows == 6
    assert "shard-00002" not in store.committed("cam")
    _write(store, range(2, 3))  # the rerun redoes only that shard, onto the same paths
    assert store.read("boxes").num_rows == 9
    assert len(store.fs.glob(f"{tmp_path}/boxes/run=r1/method=cam/*.parquet")) == 3


def test_plain_readers_see_hive_partitions_and_skip_temporaries(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(2))
    store.fs.pipe_file(f"{tmp_path}/boxes/run=r1/method=cam/_shard-00009.parquet.x.tmp", b"junk")
    table = ds.dataset(f"{tmp_path}/boxes", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 6 and set(table["method"].to_pylist()) == {"cam"}
    import duckdb

    n = duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/boxes/**/*.parquet', hive_partitioning=true)"
    ).fetchall()[0][0]
    assert n == 6


def test_markers_carry_row_counts_and_content_hashes(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    commit = store.commit("cam", "shard-00000", {"boxes": _rows(0)}, extra={"metric": [1, 2]})
    (back,) = store.commits("cam")
    assert back == commit
    assert back.files["boxes"]["rows"] == 3
    assert back.files["boxes"]["sha256"] == table_digest(_rows(0))
    assert table_digest(_rows(0)) != table_digest(_rows(1))


def test_second_live_writer_refuses_and_expired_lease_is_taken_over(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    with store.lease(ttl=60):
        with pytest.raises(RunInUseError, match="r1"):
            ShardStore(str(tmp_path), "r1").lease(ttl=60).acquire()
        # Another run id under the same prefix is independent.
        ShardStore(str(tmp_path), "r2").lease(ttl=60).acquire().release()
    crashed = store.lease(ttl=0.1).acquire()  # never released, as after a crash
    time.sleep(0.2)
    taker = ShardStore(str(tmp_path), "r1").lease(ttl=60).acquire()
    with pytest.raises(RunInUseError):
        crashed.renew()
    taker.release()


@pytest.mark.parametrize("bad", ["", "a/b", "run=x", "_hidden", ".dot"])
def test_bad_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="invalid"):
        ShardStore(str(tmp_path), bad)


def test_retries_transient_errors_but_not_permanent_ones():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("endpoint down")
        return "ok"

    assert with_retries(flaky, what="flaky", base_delay=0.001) == "ok" and len(calls) == 3

    def missing():
        calls.append(1)
        raise FileNotFoundError("nope")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(missing, what="missing", base_delay=0.001)
    assert len(calls) == 1


def test_s3_commit_and_read(object_store):
    store = ShardStore(f"{object_store}/out", "r1")
    with store.lease(ttl=30):
        _write(store, range(2))
    again = ShardStore(f"{object_store}/out", "r1")
    assert again.committed("cam") == {"shard-00000", "shard-00001"}
    assert again.read("boxes").num_rows == 6


def test_object_store_files_go_straight_to_their_keys(object_store, monkeypatch):
    # One PUT is all-or-nothing on S3: no temporary key, no move (a move is head + copy + delete).
    store = ShardStore(f"{object_store}/direct", "r1")

    def no_move(*args, **kwargs):
        raise AssertionError("an object store commit must not move files")

    monkeypatch.setattr(store.fs, "mv", no_move)
    _write(store, range(1))
    assert store.read("boxes").num_rows == 3
    keys = store.fs.find(f"{store._root_path}/boxes")
    assert [k.rsplit("/", 1)[1] for k in keys] == ["shard-00000.parquet"]


def test_local_files_are_renamed_into_place(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path), "r1")
    moved = []
    real_mv = store.fs.mv
    monkeypatch.setattr(store.fs, "mv", lambda a, b, **kw: (moved.append((a, b)), real_mv(a, b, **kw)))
    _write(store, range(1))
    names = [b.rsplit("/", 1)[1] for _, b in moved]
    assert [n for n in names if n.endswith(".parquet")] == ["shard-00000.parquet"] * 2
    assert names[-1] == "shard-00000.json"  # the marker too: a torn marker would fail reads
    assert all(a.rsplit("/", 1)[1].startswith("_") for a, _ in moved)
