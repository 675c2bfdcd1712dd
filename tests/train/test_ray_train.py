"""The same loop under Ray Train: two CPU workers with DDP for one tiny epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camflow.models import load_checkpoint
from camflow.train import TrainConfig
from tests.cluster.multinode import pids_titled


@pytest.mark.slow
def test_two_cpu_workers_learn_and_write_a_loadable_checkpoint(ray_session, tmp_path, squares) -> None:
    from cluster.train import train_distributed

    config = TrainConfig(model="resnet18", epochs=1, batch_size=4, optimizer="adamw", lr=3e-3,
                         schedule="cosine", image_size=32, threads=1, seed=0)
    result = train_distributed(
        config, squares(48), squares(16, seed=1), out_uri=str(tmp_path / "ray"),
        classes=["a", "b", "c"], num_workers=2, use_gpu=False,
    )
    losses = result.step_losses  # rank 0: 24 images per worker in batches of 4
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert result.num_train == 48 and result.best_epoch == 0
    model, meta = load_checkpoint(result.checkpoint_uri)
    assert meta["classes"] == ["a", "b", "c"] and meta["epoch"] == 0
    assert "module." not in "".join(model.state_dict())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_training_worker_is_replaced_and_training_resumes(ray_session, tmp_path,
                                                                   squares) -> None:
    """One of two Ray Train workers is SIGKILLed after the first epoch's state is saved: the
    worker group restarts and goes on after that epoch, not from scratch."""
    import json
    import os
    import signal
    import threading
    import time

    from safetensors import safe_open

    from camflow.train.resume import RESUME_STATE
    from cluster.train import train_distributed

    out = tmp_path / "ray"
    state = out / RESUME_STATE
    killed: dict = {}
    stop = threading.Event()

    def kill_after_the_first_epoch() -> None:
        while not stop.is_set():
            if state.exists() and (pids := pids_titled(b"RayTrainWorker")):
                with safe_open(str(state), "pt") as f:
                    killed["history"] = json.loads(f.metadata()["progress"])["history"]
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_after_the_first_epoch, daemon=True)
    watcher.start()
    config = TrainConfig(model="resnet18", epochs=3, batch_size=4, optimizer="sgd", lr=3e-3,
                         schedule="cosine", image_size=32, threads=1, seed=0)
    try:
        result = train_distributed(config, squares(48), squares(16, seed=1), out_uri=str(out),
                                   classes=["a", "b", "c"], num_workers=2, use_gpu=False)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no training worker was killed"
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    done = len(killed["history"])
    assert 1 <= done < 3
    # The epochs finished before the kill were carried over as they were, not run again.
    assert result.history[:done] == killed["history"]
    assert len(result.step_losses) == 3 * 6 and not state.exists()
    _, meta = load_checkpoint(result.checkpoint_uri)
    assert meta["epoch"] == result.best_epoch
