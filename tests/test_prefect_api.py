"""Prefect 3.8.8's own client against its own server: the FastAPI pin keeps them compatible.

The client sends explicit JSON nulls for unset optional body fields (``"offset": null``,
``"limit": null``). FastAPI >= 0.151 validates those nulls against ``limit: int = Body(None)``
and the server answers 422; FastAPI >= 0.155 no longer starts the server at all
(``Body(min_items=...)``). pyproject pins ``fastapi>=0.139,<0.151``.
"""

from __future__ import annotations

import uuid

import pytest


@pytest.mark.slow
def test_artifact_and_flow_runs_read_back(prefect_harness):
    from prefect import flow
    from prefect.artifacts import Artifact, create_table_artifact
    from prefect.client.orchestration import get_client

    key = f"api-check-{uuid.uuid4().hex[:8]}"

    @flow(name="camflow-api-check")
    def tiny() -> int:
        create_table_artifact(key=key, table=[{"split": "val", "miou": 0.5}])
        return 1

    assert tiny() == 1

    artifact = Artifact.get(key)  # POST /artifacts/filter with "offset": null
    assert artifact is not None
    assert artifact.key == key
    assert artifact.type == "table"
    assert "miou" in str(artifact.data)

    runs = get_client(sync_client=True).read_flow_runs()  # POST /flow_runs/filter, "limit": null
    assert any(run.name and run.state and run.state.is_completed() for run in runs)
