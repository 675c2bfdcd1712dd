"""Shared test harness: one Ray and one Prefect per test session, started only when a test asks."""

from __future__ import annotations

import os
import tempfile

# Prefect reads its settings at import time: isolate its home and keep it offline before any import.
_PREFECT_HOME = tempfile.mkdtemp(prefix="camflow-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs it (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield
