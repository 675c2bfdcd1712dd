"""The training loop on tiny synthetic data: it learns, keeps the best checkpoint, copes with bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from camflow.models import load_checkpoint
from camflow.train import TrainConfig, train
from camflow.train.data import select_subset


def _config(**kw) -> TrainConfig:
    base = dict(model="resnet18", epochs=2, batch_size=8, optimizer="adamw", lr=3e-3,
                schedule="cosine", image_size=32, threads=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_decreases_and_the_best_checkpoint_round_trips(tmp_path, squares) -> None:
    train_ds, val_ds = squares(64), squares(24, seed=1)
    result = train(_config(epochs=3), train_ds, val_ds, out_uri=str(tmp_path / "run"),
                   classes=["red", "green", "blue"])
    losses = result.step_losses
    assert len(losses) == 3 * 8
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert {"mAP", "f1_micro", "f1_macro", "val_loss"} <= set(result.history[0])
    assert result.best_metrics["mAP"] == max(h["mAP"] for h in result.history)
    model, meta = load_checkpoint(result.checkpoint_uri)
    assert meta["classes"] == ["red", "green", "blue"] and meta["epoch"] == result.best_epoch
    assert meta["seed"] == 0 and meta["proportion"] == 1.0 and meta["data_hash"] == result.data_hash
    assert meta["metrics"]["mAP"] == pytest.approx(result.best_metrics["mAP"])
    assert meta["model"]["name"] == "resnet18"
    with torch.no_grad():
        assert model(torch.stack([val_ds[0]["image"]])).shape == (1, 3)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["history"]) == 3 and history["num_train"] == 64


@pytest.mark.parametrize("head", ["tap", "recam"])
def test_tap_and_recam_heads_train(tmp_path, squares, head) -> None:
    result = train(_config(head=head, epochs=1), squares(32), squares(16, seed=1),
                   out_uri=str(tmp_path / head))
    assert all(np.isfinite(result.step_losses))
    model, meta = load_checkpoint(result.checkpoint_uri)
    assert meta["model"]["head"] == head
    if head == "recam":
        assert model.recam_head.weight.abs().sum() > 0


def test_recam_head_receives_gradient(squares) -> None:
    from camflow.models import build
    from camflow.train.objective import Objective

    torch.manual_seed(0)
    model = build("resnet18", 3, head="recam")
    batch = [squares(4)[i] for i in range(4)]
    out = Objective(model)(torch.stack([b["image"] for b in batch]), torch.stack([b["labels"] for b in batch]))
    out["loss"].backward()
    assert out["recam"] > 0 and model.recam_head.weight.grad.abs().sum() > 0
    assert out["loss"].item() == pytest.approx(out["bce"].item() + out["recam"].item())


def test_same_seed_gives_the_same_run(tmp_path, squares) -> None:
    runs = [
        train(_config(epochs=1), squares(32), squares(16, seed=1), out_uri=str(tmp_path / f"r{i}"))
        for i in range(2)
    ]
    assert runs[0].step_losses == runs[1].step_losses
    assert runs[0].data_hash == runs[1].data_hash


def test_broken_images_are_reported_and_training_goes_on(tmp_path, squares) -> None:
    result = train(_config(epochs=1), squares(32, broken={3, 17}), squares(16, seed=1, broken={2}),
                   out_uri=str(tmp_path / "run"))
    ids = [image_id for image_id, _ in result.rejects]
    assert ids == ["sq_0002", "sq_0003", "sq_0017"]
    assert all("cannot decode image" in reason for _, reason in result.rejects)
    assert result.best_epoch == 0


def test_head_num_classes_mismatch_is_refused(tmp_path, squares) -> None:
    with pytest.raises(ValueError, match="head/num_classes mismatch"):
        train(_config(), squares(16), squares(8), out_uri=str(tmp_path), num_classes=5)
    with pytest.raises(ValueError, match="validation set has labels of shape"):
        train(_config(), squares(16), squares(8, num_classes=4), out_uri=str(tmp_path))


def test_empty_training_set_is_refused(tmp_path, squares) -> None:
    with pytest.raises(ValueError, match="training set is empty"):
        select_subset(np.zeros((0, 3)), 1.0, 0)
    with pytest.raises(ValueError, match="validation set is empty"):
        train(_config(), squares(16), torch.utils.data.Subset(squares(4), []), out_uri=str(tmp_path),
              num_classes=3)


def test_only_the_chief_validates_and_writes(tmp_path, squares) -> None:
    from camflow.train import Runtime

    reports, wrapped = [], []
    runtime = Runtime(device="cpu", rank=1, world_size=2, report=reports.append,
                      prepare_model=lambda m: wrapped.append(m) or m)
    result = train(_config(epochs=2, eval_every=2), squares(16), squares(8, seed=1),
                   out_uri=str(tmp_path / "worker"), runtime=runtime)
    assert [r["epoch"] for r in reports] == [0, 1] and "mAP" not in reports[1]
    assert len(wrapped) == 1 and result.best_epoch == -1
    assert not (tmp_path / "worker").exists()


def test_eval_every_skips_validation_but_not_the_last_epoch(tmp_path, squares) -> None:
    result = train(_config(epochs=3, eval_every=2), squares(16), squares(8, seed=1),
                   out_uri=str(tmp_path / "run"))
    assert ["mAP" in h for h in result.history] == [False, True, True]


def test_keep_last_keeps_the_last_epoch_and_a_second_stage_starts_from_a_checkpoint(
        tmp_path, squares) -> None:
    train_ds, val_ds = squares(32), squares(16, seed=1)
    first = train(_config(epochs=3, keep="last"), train_ds, val_ds, out_uri=str(tmp_path / "a"))
    assert first.best_epoch == 2 and first.history[-1]["mAP"] == first.best_metrics["mAP"]
    gap, _ = load_checkpoint(first.checkpoint_uri)
    second = train(_config(epochs=1, head="recam", init_checkpoint=first.checkpoint_uri),
                   train_ds, val_ds, out_uri=str(tmp_path / "b"))
    recam, meta = load_checkpoint(second.checkpoint_uri)
    assert meta["config"]["init_checkpoint"] == first.checkpoint_uri
    assert recam.spec["head"] == "recam" and hasattr(recam, "recam_head")

    from camflow.models import CheckpointError, build
    from camflow.models.checkpoint import init_from_checkpoint

    fresh = build("resnet18", 3, head="recam")
    init_from_checkpoint(fresh, first.checkpoint_uri)
    assert torch.equal(fresh.stage1.conv1.weight, gap.stage1.conv1.weight)
    with pytest.raises(CheckpointError, match="another architecture"):
        init_from_checkpoint(build("resnet18", 4, head="recam"), first.checkpoint_uri)
