"""Rejects: the quarantine table and its log line."""

from __future__ import annotations

import logging

from camflow.data.rejects import REJECTS_SCHEMA, Rejects


def test_rejects_collect_log_and_tabulate(caplog) -> None:
    rejects = Rejects()
    assert len(rejects) == 0 and rejects  # an empty collector is still truthy
    assert rejects.to_table().schema.equals(REJECTS_SCHEMA) and rejects.to_table().num_rows == 0
    with caplog.at_level(logging.WARNING, logger="camflow.data"):
        rejects.add("img7", "s3://user:secret@bucket/img7.jpg", "read", "zero-size image file")
    assert len(rejects) == 1
    assert "img7" in caplog.text and "zero-size" in caplog.text and "read" in caplog.text
    assert "secret" not in caplog.text
    table = rejects.to_table()
    assert table.schema.equals(REJECTS_SCHEMA)
    assert table.to_pylist()[0]["reason"] == "zero-size image file"
    assert rejects.reasons() == {"img7": "zero-size image file"}
