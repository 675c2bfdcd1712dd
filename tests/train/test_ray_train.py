"""The same loop under Ray Train: two CPU workers with DDP for one tiny epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camflow.models import load_checkpoint
from camflow.train import TrainConfig


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
