from __future__ import annotations

import pytest

from cluster.connect import actor_options, connect, torch_threads_for, worker_cpus


@pytest.mark.slow
def test_connect_reuses_the_running_ray(ray_session):
    info = connect()
    assert info.num_cpus >= 1 and info.local
    assert connect() == info


def test_actor_options_cpu_and_fractional_gpu():
    assert actor_options(use_gpu=False) == {"num_cpus": 1.0, "num_gpus": 0}
    assert actor_options(use_gpu=True, gpu_fraction=0.25)["num_gpus"] == 0.25
    with pytest.raises(ValueError, match="gpu_fraction"):
        actor_options(use_gpu=True, gpu_fraction=0)
    assert torch_threads_for(2.0) == 2 and torch_threads_for(0.5) == 1


@pytest.mark.slow
def test_worker_cpus_share_a_one_node_ray(ray_session):
    cpus = ray_session.cluster_resources()["CPU"]
    assert worker_cpus(1) == cpus
    assert worker_cpus(2) == max(1.0, cpus // 2)
    assert worker_cpus(int(cpus) + 1) == 1.0  # never below one CPU: Ray queues the extra actor
    assert worker_cpus(2, 0.5) == 0.5


def test_worker_cpus_rejects_nonsense():
    with pytest.raises(ValueError, match="workers"):
        worker_cpus(0)
    with pytest.raises(ValueError, match="cpus_per_worker"):
        worker_cpus(1, 0)


def test_training_is_distributed_on_a_cluster_joined_through_ray_address(monkeypatch):
    from cluster.connect import ClusterOptions

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ClusterOptions().distributed
    assert ClusterOptions(workers=2).distributed and ClusterOptions(use_gpu=True).distributed
    assert ClusterOptions(address="ray://head:10001").distributed
    # A run joined through RAY_ADDRESS trains on the cluster even with one worker: the driver
    # may be a small machine (or the head, which should only coordinate).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert ClusterOptions().distributed


def test_a_local_output_on_a_cluster_of_several_machines_is_warned_about(monkeypatch):
    import cluster.connect as connect_module
    from cluster.connect import local_output_warning

    def nodes_on(*hosts):
        return lambda: [{"Alive": True, "NodeManagerAddress": h} for h in hosts] + [
            {"Alive": False, "NodeManagerAddress": "10.0.0.99"}]

    monkeypatch.setattr(connect_module.ray, "is_initialized", lambda: True)
    # Two nodes of one machine (as in tests/cluster/test_multinode.py) share its disk.
    monkeypatch.setattr(connect_module.ray, "nodes", nodes_on("10.0.0.1", "10.0.0.1"))
    assert local_output_warning("/data/runs/a") is None
    monkeypatch.setattr(connect_module.ray, "nodes", nodes_on("10.0.0.1", "10.0.0.2"))
    for local in ("/data/runs/a", "runs/a", "file:///data/runs/a"):
        warning = local_output_warning(local)
        assert warning and local in warning and "2 machines" in warning
    assert local_output_warning("s3://bucket/runs/a") is None


def test_io_pools_default_to_the_cpus_the_cam_workers_leave_free():
    from cluster.generate import io_pool_size

    assert io_pool_size(2, workers=1, cpus_per_worker=2) == 1  # this machine: never zero
    assert io_pool_size(2, workers=2, cpus_per_worker=1) == 1
    assert io_pool_size(64, workers=8, cpus_per_worker=3) == 40  # 8 GPU workers on 64 CPUs
