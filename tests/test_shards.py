from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from camflow import storage
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


def _count_calls(error: BaseException):
    calls = []

    def failing():
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "ok"

    return calls, failing


class EndpointConnectionError(Exception):
    """Named as botocore's (which camflow matches by name, not by import)."""


class ClientError(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def _translated(status: int, code: str) -> OSError:
    # What s3fs raises for a ClientError: a plain OSError caused by it.
    exc = OSError(5, code)
    exc.__cause__ = ClientError(status, code)
    return exc


@pytest.mark.parametrize("error", [
    ConnectionError("endpoint down"), ConnectionResetError("reset"), TimeoutError("slow"),
    EndpointConnectionError("Could not connect"), _translated(503, "SlowDown"),
    _translated(500, "InternalError"), _translated(400, "Throttling"),
], ids=lambda e: type(e).__name__ + (f"-{e.__cause__}" if e.__cause__ else ""))
def test_transient_errors_are_retried(error):
    calls, failing = _count_calls(error)
    assert with_retries(failing, what="flaky", base_delay=0.001) == "ok" and len(calls) == 3


@pytest.mark.parametrize("error", [
    OSError(28, "disk full"), OSError("disk full"), PermissionError(13, "denied"),
    FileNotFoundError("nope"), ValueError("bad marker"), _translated(403, "AccessDenied"),
    _translated(400, "InvalidArgument"),
], ids=lambda e: type(e).__name__ + (f"-{e.__cause__}" if e.__cause__ else f"-{e}"))
def test_permanent_errors_are_not_retried(error):
    calls, failing = _count_calls(error)
    with pytest.raises(type(error)):
        with_retries(failing, what="permanent", base_delay=0.001)
    assert len(calls) == 1


def test_retries_give_up_after_the_last_attempt():
    calls, failing = _count_calls(ConnectionError("down"))
    with pytest.raises(ConnectionError):
        with_retries(failing, what="down", attempts=2, base_delay=0.001)
    assert len(calls) == 2


def test_only_an_explicit_cause_makes_an_error_transient():
    try:
        try:
            raise ConnectionError("down")
        except ConnectionError:
            raise ValueError("raised while handling it") from None
    except ValueError as exc:
        assert not storage.is_transient(exc)
    chained = RuntimeError("wrapped")
    chained.__cause__ = TimeoutError()
    assert storage.is_transient(chained)


def test_the_shard_store_alone_retries_on_s3(s3_bucket):
    """Its filesystem makes one attempt per request; other callers keep the clients' retries."""
    store = ShardStore(f"s3://{s3_bucket}/out", "r1")
    assert store.fs.retries == 1
    assert store.fs.config_kwargs["retries"]["total_max_attempts"] == 1
    store.fs.ls(s3_bucket)  # a client made: botocore must not turn it into more attempts
    assert store.fs.config_kwargs["retries"]["total_max_attempts"] == 1
    assert store.fs.s3.meta.config.retries["total_max_attempts"] == 1
    assert store.fs.config_kwargs["s3"] == {"addressing_style": "path"}  # the env's options kept
    plain, _ = storage.resolve(f"s3://{s3_bucket}/out")
    assert plain is not store.fs and plain.retries == 5 and "retries" not in plain.config_kwargs


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


def _steal(lease_path, owner: str = "thief", expires_in: float = 600.0) -> dict:
    import json
    from pathlib import Path

    doc = {"owner": owner, "expires": time.time() + expires_in}
    Path(lease_path).write_text(json.dumps(doc))
    return doc


def test_renewal_raises_once_another_owner_holds_the_lease_and_leaves_it(tmp_path):
    import json
    from pathlib import Path

    lease = ShardStore(str(tmp_path), "r1").lease(ttl=60).acquire()
    lease.renew()
    theirs = _steal(lease.path)
    with pytest.raises(RunInUseError, match="thief"):
        lease.renew()
    with pytest.raises(RunInUseError, match="thief"):
        lease.check()
    lease.release()  # not ours: left alone
    assert json.loads(Path(lease.path).read_text()) == theirs


def test_a_removed_lease_counts_as_lost(tmp_path):
    lease = ShardStore(str(tmp_path), "r1").lease(ttl=60).acquire()
    store_fs = lease.fs
    store_fs.rm_file(lease.path)
    with pytest.raises(RunInUseError, match="removed"):
        lease.renew()
    assert not store_fs.exists(lease.path)


def _race(n: int, make):
    """Run ``make()`` .acquire() from ``n`` threads at once; the leases that won, and the losers."""
    import threading

    barrier = threading.Barrier(n)
    won, lost = [], []

    def go():
        lease = make()
        barrier.wait()
        try:
            won.append(lease.acquire())
        except RunInUseError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


def test_of_racing_writers_exactly_one_takes_a_fresh_lease(tmp_path):
    won, lost = _race(4, lambda: ShardStore(str(tmp_path), "r1").lease(ttl=60))
    assert len(won) == 1 and len(lost) == 3
    assert won[0]._atomic_create()  # a hard link on local disk
    won[0].check()


def test_of_racing_takers_of_an_expired_lease_exactly_one_wins(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    crashed = store.lease(ttl=0.05).acquire()
    time.sleep(0.1)
    won, lost = _race(3, lambda: ShardStore(str(tmp_path), "r1").lease(ttl=60))
    assert len(won) == 1 and len(lost) == 2
    won[0].check()
    with pytest.raises(RunInUseError):
        crashed.renew()


def test_an_object_store_lease_refuses_a_second_writer(object_store):
    store = ShardStore(f"{object_store}/out", "r1")
    with store.lease(ttl=30) as lease:
        # moto honours If-None-Match; rclone ignores it and gets the read-back instead.
        assert lease._atomic_create() == object_store_honours_if_none_match(store)
        with pytest.raises(RunInUseError, match="r1"):
            ShardStore(f"{object_store}/out", "r1").lease(ttl=30).acquire()
        lease.renew()
        lease.check()
    assert not store.fs.exists(lease.path)
    assert not store.fs.glob(f"{store._root_path}/_runs/run=r1/_probe-*")


def object_store_honours_if_none_match(store: ShardStore) -> bool:
    key = f"{store._root_path}/_if_none_match_check"
    store.fs.pipe_file(key, b"1", mode="create")
    try:
        store.fs.pipe_file(key, b"2", mode="create")
        return False
    except FileExistsError:
        return True
    finally:
        store.fs.rm_file(key)


def test_committed_lists_names_without_reading_markers(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(3))

    def no_reads(*args, **kwargs):
        raise AssertionError("committed() must not read markers")

    monkeypatch.setattr(store.fs, "cat", no_reads)
    monkeypatch.setattr(store.fs, "cat_file", no_reads)
    assert store.committed("cam") == {"shard-00000", "shard-00001", "shard-00002"}


def test_markers_are_read_in_one_batch_and_a_vanished_one_is_skipped(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(3))
    batches = []
    real_cat = store.fs.cat
    monkeypatch.setattr(store.fs, "cat", lambda paths, **kw: (batches.append(list(paths)),
                                                               real_cat(paths, **kw))[1])
    real_markers = store._markers
    gone = store.marker_path("cam", "shard-00007")  # listed, then deleted before the read
    monkeypatch.setattr(store, "_markers", lambda method: sorted([*real_markers(method), gone]))
    assert [c.shard for c in store.commits("cam")] == ["shard-00000", "shard-00001", "shard-00002"]
    assert len(batches) == 1 and len(batches[0]) == 4
    batches.clear()
    assert store.read("boxes", "cam").num_rows == 9
    assert [len(b) for b in batches] == [4, 3]  # the markers, then the three data files


def test_a_bad_marker_is_named(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(2))
    store.fs.pipe_file(store.marker_path("cam", "shard-00001"), b"{not json")
    with pytest.raises(ValueError, match="unreadable commit marker .*shard-00001.json"):
        store.commits("cam")


def test_a_missing_data_file_of_a_committed_shard_raises(tmp_path):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(2))
    store.fs.rm_file(store.data_path("boxes", "cam", "shard-00001"))
    with pytest.raises(FileNotFoundError):
        store.read("boxes", "cam")


def test_a_transient_failure_rereads_only_what_failed(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(3))
    asked = []
    real_cat = store.fs.cat

    def flaky(paths, **kw):
        asked.append(len(paths))
        out = real_cat(paths, **kw)
        if len(asked) == 1:
            out[paths[1]] = ConnectionResetError("reset mid-batch")
        return out

    monkeypatch.setattr(store.fs, "cat", flaky)
    monkeypatch.setattr("camflow.storage.random.random", lambda: -0.49)  # no waiting
    assert len(store.commits("cam")) == 3 and asked == [3, 1]


def test_reading_some_images_skips_the_files_that_cannot_hold_them(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path), "r1")
    _write(store, range(3))
    everything = store.read("boxes", "cam")
    read = []
    real_cat = store.fs.cat
    monkeypatch.setattr(store.fs, "cat", lambda paths, **kw: (read.extend(paths),
                                                               real_cat(paths, **kw))[1])
    some = store.read("boxes", "cam", image_ids=["img1_2", "img1_0", "nowhere"])
    assert sorted(some["image_id"].to_pylist()) == ["img1_0", "img1_2"]
    assert [p for p in read if p.endswith(".parquet")] == [store.data_path("boxes", "cam", "shard-00001")]
    want = everything.filter(pa.compute.is_in(everything["image_id"], pa.array(["img1_0", "img1_2"])))
    assert some.sort_by("image_id").equals(want.sort_by("image_id"))
    assert store.read("boxes", "cam", image_ids=[]).num_rows == 0


def test_the_keeper_rides_out_failed_renewals_and_stops_at_a_lost_lease(tmp_path):
    import json
    from pathlib import Path

    from camflow.lease import LeaseKeeper

    lease = ShardStore(str(tmp_path), "r1").lease(ttl=60).acquire()
    real_renew, calls, theirs = lease.renew, [], []

    def renew():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store down")  # logged; the next tick tries again
        if len(calls) == 3:
            theirs.append(_steal(lease.path))
        real_renew()

    lease.renew = renew
    deadline = time.time() + 10
    with LeaseKeeper(lease, every=0.01) as keeper:
        while keeper.lost is None and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(RunInUseError, match="thief"):
            keeper.raise_if_lost()
        time.sleep(0.05)
        assert len(calls) == 3  # no renewal after the loss
    assert json.loads(Path(lease.path).read_text()) == theirs[0]


def test_the_keeper_reads_the_lease_when_asked(tmp_path):
    from camflow.lease import LeaseKeeper

    lease = ShardStore(str(tmp_path), "r1").lease(ttl=600).acquire()
    with LeaseKeeper(lease) as keeper:
        keeper.raise_if_lost(read=True)
        _steal(lease.path)
        keeper.raise_if_lost()  # no renewal yet has seen it
        with pytest.raises(RunInUseError, match="thief"):
            keeper.raise_if_lost(read=True)
