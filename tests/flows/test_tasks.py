"""Small rules inside the Prefect tasks, checked without running a flow."""

from __future__ import annotations

import pyarrow as pa
import pytest

from camflow.data import embedded
from camflow.data.manifest import with_classes
from camflow.data.sources import DataOptions, split_classes


def test_a_dataset_without_class_names_is_an_error_naming_it():
    table = pa.table({"image_id": ["a"], "labels": [[0]]})
    data = DataOptions(kind="manifest", manifest="/data/m.parquet")
    with pytest.raises(ValueError, match=r"/data/m\.parquet names no classes"):
        split_classes(table, data, "/data")
    assert split_classes(with_classes(table, ["cat"]), data, "/data") == ["cat"]
    assert split_classes(table, DataOptions(), "/x") == list(embedded.CLASSES)
