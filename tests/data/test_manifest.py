"""The manifest schema, its Parquet round trip, and root containment of paths."""

from __future__ import annotations

import pyarrow as pa
import pytest

from camflow.data.manifest import (
    MANIFEST_SCHEMA,
    PathEscapeError,
    class_names,
    is_inside,
    join_under,
    make_manifest,
    read_manifest,
    write_manifest,
)

ROWS = [
    {
        "image_id": "a",
        "uri": "/data/a.jpg",
        "split": "train",
        "labels": [3, 1],
        "width": 10,
        "height": 8,
        "boxes": [(1, 0.0, 1.0, 5.0, 6.0)],
    },
    {"image_id": "b", "uri": "/data/b.jpg", "split": "val", "labels": [0], "width": 4, "height": 4},
]


def test_make_manifest_follows_the_schema() -> None:
    table = make_manifest(ROWS, classes=["c0", "c1", "c2", "c3"])
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table.column("labels").to_pylist() == [[1, 3], [0]]
    assert table.column("mask_uri").null_count == 2
    assert table.column("boxes").to_pylist() == [
        [{"class_id": 1, "x0": 0.0, "y0": 1.0, "x1": 5.0, "y1": 6.0}],
        None,
    ]
    assert class_names(table) == ["c0", "c1", "c2", "c3"]


def test_parquet_round_trip_keeps_classes(tmp_path) -> None:
    table = make_manifest(ROWS, classes=["c0", "c1", "c2", "c3"])
    write_manifest(table, str(tmp_path / "m" / "manifest.parquet"))
    back = read_manifest(str(tmp_path / "m" / "manifest.parquet"))
    assert back.equals(table) and class_names(back) == class_names(table)


def test_read_manifest_adds_optional_columns_and_names_missing_ones(tmp_path) -> None:
    import pyarrow.parquet as pq

    table = make_manifest(ROWS).drop_columns(["mask_uri", "boxes"])
    pq.write_table(table, tmp_path / "slim.parquet")
    assert read_manifest(str(tmp_path / "slim.parquet")).schema.equals(MANIFEST_SCHEMA)
    pq.write_table(table.drop_columns(["labels"]), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="labels"):
        read_manifest(str(tmp_path / "bad.parquet"))


def test_schema_types() -> None:
    assert MANIFEST_SCHEMA.field("labels").type == pa.list_(pa.int16())
    assert MANIFEST_SCHEMA.field("width").type == pa.int32()
    assert MANIFEST_SCHEMA.field("mask_uri").nullable and MANIFEST_SCHEMA.field("boxes").nullable


@pytest.mark.parametrize(
    ("root", "relative", "expected"),
    [
        ("/data/voc", "JPEGImages/x.jpg", "/data/voc/JPEGImages/x.jpg"),
        ("/data/voc/", "a/../b.jpg", "/data/voc/b.jpg"),
        ("s3://bucket/voc", "JPEGImages/x.jpg", "s3://bucket/voc/JPEGImages/x.jpg"),
    ],
)
def test_join_under(root, relative, expected) -> None:
    assert join_under(root, relative) == expected


@pytest.mark.parametrize("relative", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "s3://o/x"])
def test_join_under_refuses_escapes(relative) -> None:
    with pytest.raises(PathEscapeError, match="root|absolute"):
        join_under("s3://bucket/voc", relative)


def test_is_inside() -> None:
    assert is_inside("/data/voc/a.jpg", "/data/voc")
    assert not is_inside("/data/vocx/a.jpg", "/data/voc")  # a sibling with a common prefix
    assert not is_inside("/data/voc/../a.jpg", "/data/voc")
    assert not is_inside("s3://bucket/voc/a.jpg", "/data/voc")
