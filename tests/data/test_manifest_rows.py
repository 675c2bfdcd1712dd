"""Row ranges of a manifest file: what a decoder reads of its shard, and nothing around it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from camflow.data.manifest import (
    ROW_GROUP_ROWS,
    ManifestRows,
    make_manifest,
    manifest_rows,
    write_manifest,
)


def test_ranges_read_only_their_rows_in_order(tmp_path, monkeypatch):
    n = 2 * ROW_GROUP_ROWS + 100
    table = make_manifest([{"image_id": f"im{i:05d}", "uri": f"/x/{i}.png", "labels": [i % 3], "width": 8, "height": 8,
                            "split": "val"} for i in range(n)])
    uri = str(tmp_path / "m.parquet")
    write_manifest(table, uri)
    assert manifest_rows(uri) == n
    rows = ManifestRows(uri)
    read_groups = []
    real = rows._parquet.read_row_groups
    monkeypatch.setattr(rows._parquet, "read_row_groups",
                        lambda groups, **kw: read_groups.append(list(groups)) or real(groups, **kw))
    for start, stop in ((0, 64), (ROW_GROUP_ROWS - 10, ROW_GROUP_ROWS + 10), (n - 5, n), (7, 7)):
        got = rows.read(start, stop)
        assert got["image_id"].to_pylist() == [f"im{i:05d}" for i in range(start, stop)]
    assert read_groups == [[0], [0, 1], [2]]  # the empty range reads nothing
    with pytest.raises(ValueError, match="holds"):
        rows.read(0, n + 1)
    rows.close()


def test_row_groups_are_small_enough_for_a_shard(tmp_path):
    import pyarrow.parquet as pq

    table = make_manifest([{"image_id": f"im{i}", "uri": f"/x/{i}.png", "labels": [0], "width": 8, "height": 8,
                            "split": "val"} for i in range(3000)])
    write_manifest(table, str(tmp_path / "m.parquet"))
    meta = pq.ParquetFile(str(tmp_path / "m.parquet")).metadata
    assert meta.num_row_groups == 3 and isinstance(table, pa.Table)
