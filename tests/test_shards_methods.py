"""ShardStore.methods(): method names from one listing of the marker folders, no marker reads."""

from __future__ import annotations

import pyarrow as pa

from camflow.shards import ShardStore


def _commit(store: ShardStore, method: str, shard: str = "shard-00000") -> None:
    store.commit(method, shard, {"seeds": pa.table({"image_id": ["a"]})})


def _forbid_reads(monkeypatch, store: ShardStore) -> list[str]:
    listings: list[str] = []

    def no_reads(*args, **kwargs):
        raise AssertionError("methods() must not read markers")

    real_ls = store.fs.ls
    monkeypatch.setattr(store.fs, "cat", no_reads)
    monkeypatch.setattr(store.fs, "cat_file", no_reads)
    monkeypatch.setattr(store.fs, "open", no_reads)
    monkeypatch.setattr(store.fs, "glob", no_reads)  # a glob would list every marker
    monkeypatch.setattr(store.fs, "ls", lambda path, **kw: (listings.append(path),
                                                            real_ls(path, **kw))[1])
    return listings


def test_methods_lists_committed_methods_in_one_listing_without_reads(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path), "r1")
    assert store.methods() == []  # nothing committed yet: no folder at all
    for method in ("gradcam", "cam", "decode"):
        _commit(store, method)
    _commit(store, "cam", "shard-00001")
    _commit(ShardStore(str(tmp_path), "r2"), "other")  # another run under the same root
    store.lease(ttl=30).acquire().release()  # the run's lease lives beside, not among, markers
    # Data written, marker not yet: a crash before the commit leaves no method behind.
    half = store.data_path("seeds", "layercam", "shard-00000")
    store.fs.makedirs(half.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(half, b"half")
    listings = _forbid_reads(monkeypatch, store)
    assert store.methods() == ["cam", "decode", "gradcam"]
    assert len(listings) == 1


def test_methods_on_an_object_store(object_store, monkeypatch):
    store = ShardStore(f"{object_store}/out", "r1")
    for method in ("cam", "decode"):
        _commit(store, method)
    _commit(ShardStore(f"{object_store}/out", "r2"), "other")
    again = ShardStore(f"{object_store}/out", "r1")
    listings = _forbid_reads(monkeypatch, again)
    assert again.methods() == ["cam", "decode"]
    assert len(listings) == 1
    assert ShardStore(f"{object_store}/out", "r9").methods() == []
