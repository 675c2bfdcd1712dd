"""A run's metric states: one safetensors file per shard, merged once per shard."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load as st_load

from camflow.run_metrics import (
    RunTotals,
    new_metrics,
    states_from_bytes,
    states_to_bytes,
    summarize,
)


def _shard_metrics(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    metrics = new_metrics(3)
    gt = rng.integers(0, 4, (2, 6, 5)).astype(np.uint8)
    cams = rng.random((2, 3, 6, 5)).astype(np.float32)
    metrics["seed"].update(cams, np.ones((2, 3), np.int64), gt)
    metrics["mask"].update(gt, gt[::-1])
    metrics["pixel"].update([cams[0, 0]], [gt[0] == 1], [gt[0] == 255])
    metrics["box"].update([cams[0, 1]], [np.array([[0, 0, 2, 3]], np.float64)])
    return metrics


def test_states_round_trip_every_method_and_the_rejects():
    data = states_to_bytes({"cam": _shard_metrics(0), "gradcam": _shard_metrics(1)}, rejects=3)
    assert all(not key.startswith("{") for key in st_load(data))  # binary, not JSON
    per_method, rejects = states_from_bytes(data)
    assert rejects == 3 and sorted(per_method) == ["cam", "gradcam"]
    assert summarize(per_method["cam"]) == summarize(_shard_metrics(0))


def test_totals_merge_each_shard_once_and_equal_merging_the_accumulators():
    totals = RunTotals()
    for shard, seed in (("shard-00000", 0), ("shard-00001", 1)):
        assert totals.add(shard, states_to_bytes({"cam": _shard_metrics(seed)}, rejects=seed))
    # A retried shard reports the same states again: counted once.
    assert not totals.add("shard-00001", states_to_bytes({"cam": _shard_metrics(1)}, rejects=1))
    want = _shard_metrics(0)
    for name, acc in _shard_metrics(1).items():
        want[name].merge(acc)
    assert totals.rejects == 1
    assert totals.summary("cam") == summarize(want)
    assert totals.summary("absent") == {}


def test_a_shard_state_file_is_small():
    data = states_to_bytes({m: new_metrics(20) for m in ("a", "b", "c", "d")}, rejects=0)
    # 21 VOC-sized classes, four methods: fixed-size counts (no per-image growth).
    assert len(data) < 600_000
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError):
        states_from_bytes(b"not safetensors")


def test_saved_totals_round_trip_with_their_shards():
    totals = RunTotals()
    totals.add("shard-00003", states_to_bytes({"cam": _shard_metrics(3)}, rejects=2))
    again = RunTotals.from_bytes(totals.to_bytes())
    assert again.shards == {"shard-00003"} and again.rejects == 2
    assert again.summary("cam") == totals.summary("cam")
    with pytest.raises(ValueError, match="shard list"):
        RunTotals.from_bytes(states_to_bytes({}, rejects=0))


def test_a_resume_reads_only_the_shards_the_saved_totals_lack(tmp_path, monkeypatch):
    from camflow.shards import ShardStore
    from cluster.generate import TOTALS, _resumed_totals

    store = ShardStore(str(tmp_path), "r1")
    want = RunTotals()
    for i in range(4):
        data = states_to_bytes({"cam": _shard_metrics(i)}, rejects=i)
        store.commit("decode", f"shard-{i:05d}", {}, files={"metrics": data})
        want.add(f"shard-{i:05d}", data)
        if i == 1:
            store.put_run_file(TOTALS, want.to_bytes())  # saved after two shards
    done = [f"shard-{i:05d}" for i in range(4)]
    asked = []
    real = store.read_files
    monkeypatch.setattr(store, "read_files",
                        lambda *a, **k: asked.extend(a[2]) or real(*a, **k))
    got = _resumed_totals(store, done)
    assert asked == ["shard-00002", "shard-00003"]
    assert got.shards == set(done) and got.rejects == want.rejects
    assert got.summary("cam") == want.summary("cam")
    # Totals holding a shard outside the plan, or unreadable ones, are not used.
    asked.clear()
    assert _resumed_totals(store, done[:1]).shards == {"shard-00000"} and asked == done[:1]
    store.put_run_file(TOTALS, b"garbage")
    asked.clear()
    assert _resumed_totals(store, done).summary("cam") == want.summary("cam") and asked == done
