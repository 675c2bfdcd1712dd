"""Optimisers and per-step learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from camflow.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler"]


def _is_loaded(name: str, config: TrainConfig) -> bool:
    # Weights that start trained: the stages, and with init_checkpoint the main head too (not a
    # new ReCAM head), whatever wraps the classifier (the objective, DDP's "module.").
    parts = name.split(".")[:3]
    return any(p.startswith("stage") for p in parts) or (
        config.init_checkpoint is not None and "head" in parts)


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    # Decaying norm scales and biases only hurts; the usual practice exempts them. The learning
    # rate of loaded weights may be scaled apart from new ones' (a pretrained backbone, ReCAM).
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((_is_loaded(name, config), param.ndim <= 1), []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay,
         "lr": config.lr * (config.backbone_lr_scale if backbone else 1.0)}
        for (backbone, no_decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimiser step over ``epochs * steps_per_epoch`` steps."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        # OneCycleLR divides by its warm-up's length, pct_start * total - 1 steps: zero (and a
        # ZeroDivisionError) for a 4-step run at 0.25, as a small subset trains for.
        pct_start = 0.25 if total != 4 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total, pct_start=pct_start,
            div_factor=25.0, final_div_factor=1e3,
        )
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if config.schedule == "poly":
            return (1.0 - progress) ** config.poly_power
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
