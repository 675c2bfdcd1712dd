"""Training runs of a sweep at once: each a chain of task runs of the same flow run."""

from __future__ import annotations

import pytest

from cluster.connect import ClusterOptions, runs_with_room
from tasks.common import concurrent_runs


def test_runs_go_one_at_a_time_where_training_is_local():
    assert concurrent_runs(ClusterOptions(), 7, None) == 1
    assert concurrent_runs(ClusterOptions(), 7, 3) == 3  # asked for: granted up to the runs
    assert concurrent_runs(ClusterOptions(), 2, 5) == 2


def test_room_follows_the_resources_of_one_run(ray_session, monkeypatch):
    import ray

    def cluster(cpus: float, gpus: float, nodes: int) -> None:
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": cpus, "GPU": gpus})
        monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}] * nodes)

    cluster(cpus=64, gpus=8, nodes=3)
    assert runs_with_room(ClusterOptions(workers=2), 7) == 4  # 8 GPUs, 2 per run
    assert runs_with_room(ClusterOptions(workers=1, gpu_fraction=0.5), 20) == 16
    assert runs_with_room(ClusterOptions(workers=2, use_gpu=False, cpus_per_worker=4), 7) == 7
    cluster(cpus=2, gpus=0, nodes=1)  # this machine: a run's workers share its CPUs
    assert runs_with_room(ClusterOptions(workers=1), 7) == 1


@pytest.mark.slow
def test_a_sweep_trains_its_runs_concurrently(tmp_path, prefect_harness, ray_session):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.pipeline import sweep

    config = {"name": "conc", "output": str(tmp_path), "run_id": "c1",
              "data": {"embedded_train": 24, "embedded_val": 10, "image_size": 64},
              "model": {"pretrained": False},
              "train": {"epochs": 1, "batch_size": 8},
              "cams": {"scales": [1.0], "flip": False, "shard_size": 5, "methods": ["cam"]},
              "sweep": {"proportions": [0.5, 1.0], "seeds": [0], "concurrent": 2}}
    state = sweep(config, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert set(result["results"]) == {"p0.5", "p1"}

    async def task_runs():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))

    import asyncio

    runs = asyncio.run(task_runs())
    trains = [r for r in runs if r.name.startswith("train-classifier")]
    assert len(trains) == 2
    (a, b) = sorted(trains, key=lambda r: r.start_time)
    # Both trainings were running at once: the second began before the first ended.
    assert b.start_time < a.end_time
