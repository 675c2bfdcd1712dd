"""Training that resumes: the state of an unfinished run, saved after every epoch.

``<out_uri>/resume.safetensors`` holds the model's and the optimiser's tensors, and in its
metadata the epochs done, the history so far, the best epoch and the run's key (its config and
data fingerprint). A retried run (Ray Train restarting a lost worker group, a Prefect retry, a
rerun by hand) with the same key starts after the last epoch done instead of from scratch; a
state of another run is ignored. The file is written whole or not at all, and removed when the
run finishes.

The learning-rate schedule is a function of the step count, so it is not saved: a resumed run
steps a fresh scheduler past the steps done. A CUDA GradScaler starts again from its default scale.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from camflow import storage
from camflow.tensorfile import HeaderError, read_header

__all__ = ["RESUME_STATE", "clear_state", "fast_forward", "load_state", "save_state"]

log = logging.getLogger("camflow.train")

RESUME_STATE = "resume.safetensors"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{key}"] = value
    return tensors, plain


def save_state(out_uri: str, model: nn.Module, optimizer: torch.optim.Optimizer,
               progress: Mapping[str, Any], key: Mapping[str, Any],
               storage_options: Mapping[str, Any] | None = None) -> None:
    """Save what a retry needs to go on after the epochs in ``progress``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optimizer_tensors, optimizer_plain = _optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    meta = {"key": json.dumps(key, sort_keys=True, default=str),
            "progress": json.dumps(progress, default=float),
            "optimizer_plain": json.dumps(optimizer_plain)}
    storage.write_bytes(save_safetensors(tensors, metadata=meta),
                        storage.join(out_uri, RESUME_STATE), storage_options)


def load_state(out_uri: str, model: nn.Module, optimizer: torch.optim.Optimizer,
               key: Mapping[str, Any],
               storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Load a saved state of this run (same ``key``) into ``model`` and ``optimizer`` and return
    its progress; None (both untouched) when there is none, or it is another run's or unreadable."""
    uri = storage.join(out_uri, RESUME_STATE)
    try:
        with storage.open_uri(uri, "rb", storage_options) as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        meta = read_header(data).get("__metadata__") or {}
        if meta.get("key") != json.dumps(key, sort_keys=True, default=str):
            log.info("%s is another run's state (other config or data): starting afresh",
                     storage.redact(uri))
            return None
        tensors = load_safetensors(data)
        progress = json.loads(meta["progress"])
        plain = json.loads(meta["optimizer_plain"])
    except (HeaderError, KeyError, ValueError) as exc:
        log.warning("%s is unreadable (%s): starting afresh", storage.redact(uri), exc)
        return None
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    state = optimizer.state_dict()
    by_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, field = name.split(".", 2)
            by_param.setdefault(int(index), {})[field] = value
    for name, value in plain.items():
        index, field = name.split(".", 1)
        by_param.setdefault(int(index), {})[field] = value
    state["state"] = by_param
    optimizer.load_state_dict(state)
    return progress


def clear_state(out_uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Remove the saved state of a finished run."""
    fs, path = storage.resolve(storage.join(out_uri, RESUME_STATE), storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


def fast_forward(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Step a fresh ``scheduler`` past the ``steps`` optimiser steps already taken."""
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            scheduler.step()
