"""Small rules inside the Prefect tasks, checked without running a flow."""

from __future__ import annotations

import pyarrow as pa
import pytest

from camflow.data import embedded
from camflow.data.manifest import with_classes
from tasks.data import _classes


def test_a_dataset_without_class_names_is_an_error_naming_it():
    table = pa.table({"image_id": ["a"], "labels": [[0]]})
    data = {"kind": "manifest", "manifest": "/data/m.parquet"}
    with pytest.raises(ValueError, match=r"/data/m\.parquet names no classes"):
        _classes(table, data, "/data")
    assert _classes(with_classes(table, ["cat"]), data, "/data") == ["cat"]
    assert _classes(table, {"kind": "embedded"}, "/x") == list(embedded.CLASSES)
