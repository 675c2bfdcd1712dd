"""Training that resumes: a run that dies mid-epoch goes on, when retried, after its last epoch."""

from __future__ import annotations

import json

import pytest
import torch

from camflow.models import load_checkpoint
from camflow.train import TrainConfig, train
from camflow.train.loop import Runtime
from camflow.train.resume import RESUME_STATE


class WorkerLost(RuntimeError):
    pass


def _config(**kw) -> TrainConfig:
    base = dict(model="resnet18", epochs=3, batch_size=8, optimizer="sgd", lr=3e-3,
                schedule="onecycle", image_size=32, threads=1, seed=0)
    return TrainConfig(**{**base, **kw})


def _dies_in_epoch(epoch: int, steps_per_epoch: int) -> Runtime:
    steps = []

    def on_step(_: int) -> None:
        steps.append(1)
        if len(steps) == epoch * steps_per_epoch + 2:  # two steps into ``epoch``
            raise WorkerLost("the worker's node went away")

    return Runtime(on_step=on_step)


def test_a_retried_run_goes_on_after_its_last_finished_epoch(tmp_path, squares) -> None:
    train_ds, val_ds = squares(64), squares(24, seed=1)
    out = tmp_path / "run"
    with pytest.raises(WorkerLost):
        train(_config(), train_ds, val_ds, out_uri=str(out), runtime=_dies_in_epoch(2, 8))
    assert (out / RESUME_STATE).exists()  # two epochs done, saved after each

    steps = []
    result = train(_config(), train_ds, val_ds, out_uri=str(out),
                   runtime=Runtime(on_step=lambda n: steps.append(n)))
    assert len(steps) == 8  # only the third epoch ran again
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert len(result.step_losses) == 3 * 8
    assert not (out / RESUME_STATE).exists()  # a finished run leaves no state behind
    assert json.loads((out / "history.json").read_text())["best_epoch"] == result.best_epoch
    _, meta = load_checkpoint(result.checkpoint_uri)
    assert meta["epoch"] == result.best_epoch
    # The resumed epoch started from the saved weights and optimiser: its loss carries on from
    # the second epoch's instead of starting again from an untrained model's.
    fresh = train(_config(epochs=1), train_ds, val_ds, out_uri=str(tmp_path / "fresh"))
    assert result.history[2]["train_loss"] < fresh.history[0]["train_loss"]


def test_a_state_of_another_run_is_ignored(tmp_path, squares) -> None:
    train_ds, val_ds = squares(64), squares(24, seed=1)
    out = tmp_path / "run"
    with pytest.raises(WorkerLost):
        train(_config(), train_ds, val_ds, out_uri=str(out), runtime=_dies_in_epoch(1, 8))
    steps = []
    result = train(_config(lr=1e-3), train_ds, val_ds, out_uri=str(out),  # another config
                   runtime=Runtime(on_step=lambda n: steps.append(n)))
    assert len(steps) == 3 * 8 and [h["epoch"] for h in result.history] == [0, 1, 2]


def test_the_saved_optimiser_state_round_trips(tmp_path) -> None:
    from camflow.train.resume import load_state, save_state

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    save_state(str(tmp_path), model, optimizer, {"epochs_done": 1}, {"run": "a"})
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    assert load_state(str(tmp_path), other, other_opt, {"run": "b"}) is None
    assert load_state(str(tmp_path), other, other_opt, {"run": "a"}) == {"epochs_done": 1}
    assert torch.equal(other.weight, model.weight)
    for p, q in zip(model.parameters(), other.parameters()):
        a, b = optimizer.state[p], other_opt.state[q]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "resume.safetensors").write_bytes(b"\x00garbage")
    assert load_state(str(tmp_path), other, other_opt, {"run": "a"}) is None
