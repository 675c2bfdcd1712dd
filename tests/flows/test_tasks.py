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


def test_camflow_loggers_reach_the_prefect_api():
    """Warnings such as a local output on a multi-machine cluster are logged by ``camflow.*``
    loggers, not Prefect's run logger: they must still reach the dashboard."""
    import os
    import subprocess
    import sys

    code = ("import logging, flows.cli, prefect.main\n"
            "print([type(h).__name__ for h in logging.getLogger('camflow.cluster').parent"
            ".handlers])")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_EXTRA_LOGGERS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "APILogHandler" in done.stdout
